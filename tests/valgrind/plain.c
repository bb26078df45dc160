/* plain.c: a plain malloc program (no sm_ call), run under memcheck with
 * slotmalloc preloaded by memcheck.sh. Exits 0, with every object freed. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int main(void) {
  void *v[100];
  for (int i = 0; i < 100; i++) {
    v[i] = malloc((size_t)i * 10 + 1);
    memset(v[i], 0, (size_t)i * 10 + 1);
  }
  for (int i = 0; i < 100; i++) v[i] = realloc(v[i], (size_t)i * 20 + 5);
  for (int i = 0; i < 100; i++) free(v[i]);
  char *p = calloc(10, 10);
  int sum = 0;
  for (int i = 0; i < 100; i++) sum += p[i];
  free(p);
  printf("plain: done (%d)\n", sum);
  return sum;
}
