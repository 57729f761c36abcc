/* Order pipeline, step 1: checks the order's fields and sends a valid order on to `price`;
 * an invalid one ends the chain with the reason. */
#include "baton.h"

int main(void) {
  size_t len;
  char *order = baton_read_input(&len);
  if (!order) return 1;
  long qty = baton_json_int(order, "qty", -1);
  long id = baton_json_int(order, "order", -1);
  if (id < 0 || qty < 1 || qty > 1000 || !baton_json_has_string(order, "item")) {
    char reply[128];
    snprintf(reply, sizeof reply, "{\"order\":%ld,\"status\":\"invalid\"}", id);
    baton_write_str(reply);
    return 0;
  }
  baton_write_str("@next price\n");
  baton_write(order, len);
  return 0;
}
