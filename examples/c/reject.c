/* Order pipeline, refused branch: the order is over the customer's credit; `notify` tells
 * them. */
#include "baton.h"

int main(void) {
  size_t len;
  char *order = baton_read_input(&len);
  if (!order) return 1;
  baton_forward_with_status("notify", order, "rejected");
  return 0;
}
