/* Nested-call example: asks `upper` (another function) through the host import
 * `baton.invoke` and returns "audit:" followed by its answer. */
#include "baton.h"

int main(void) {
  size_t len;
  char *payload = baton_read_input(&len);
  if (!payload) return 1;
  int n = baton_host_invoke("upper", 5, payload, (int)len);
  if (n < 0) {
    baton_write_str("audit:error");
    return 2;
  }
  char *answer = malloc((size_t)n + 1);
  if (!answer) return 1;
  int got = baton_host_result(answer, n);
  baton_write_str("audit:");
  baton_write(answer, (size_t)got);
  return 0;
}
