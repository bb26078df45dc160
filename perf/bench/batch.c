/* batch: batches of small objects (8-256 B) allocated, then freed in LIFO (-o lifo) or FIFO (-o fifo) order. */
#include "common.h"

int main(int argc, char **argv) {
  args_t a = parse_args(argc, argv, 1);
  const char *mode = a.mode ? a.mode : "lifo";
  int lifo = strcmp(mode, "lifo") == 0;
  if (!lifo && strcmp(mode, "fifo") != 0) usage_die(argv[0]);
  size_t batch = a.size ? a.size : 10000; /* -z: objects per batch */
  long long rounds = iters(&a, 600);
  size_table_t *sizes = xmalloc(sizeof *sizes);
  size_table_small(sizes, 42);
  void **obj = xmalloc(batch * sizeof *obj);
  uint64_t check = 0;
  double t0 = now_sec();
  for (long long r = 0; r < rounds; r++) {
    for (size_t i = 0; i < batch; i++) {
      size_t n = sizes->s[(i + (size_t)r) & (SIZE_TABLE_LEN - 1)];
      char *p = malloc(n);
      if (!p) die("malloc");
      p[0] = (char)i;
      p[n - 1] = (char)r;
      obj[i] = p;
    }
    if (lifo) {
      for (size_t i = batch; i-- > 0;) {
        check += ((char *)obj[i])[0];
        free(obj[i]);
      }
    } else {
      for (size_t i = 0; i < batch; i++) {
        check += ((char *)obj[i])[0];
        free(obj[i]);
      }
    }
  }
  double t1 = now_sec();
  free(obj);
  free(sizes);
  char extra[64];
  snprintf(extra, sizeof extra, "order=%s batch=%zu", mode, batch);
  report(lifo ? "lifo" : "fifo", &a, (unsigned long long)(rounds * (long long)batch), t1 - t0, check, extra);
  return 0;
}
