/* Order pipeline, accepted branch: reserves the stock (here: marks the order) and hands it
 * to `notify`. */
#include "baton.h"

int main(void) {
  size_t len;
  char *order = baton_read_input(&len);
  if (!order) return 1;
  baton_forward_with_status("notify", order, "reserved");
  return 0;
}
