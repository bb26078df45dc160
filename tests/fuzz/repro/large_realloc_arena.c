/* README: "realloc allocates where malloc would (the calling thread's current
 * arena)". A large object grown by realloc stays in its old arena instead (here
 * the root), also when it moves; so closing the entered arena does not free it,
 * and closing the old one would. Build: cc -Iinclude large_realloc_arena.c build/libslotmalloc.a -lpthread */
#include <stdio.h>
#include <slotmalloc.h>
int main(void) {
  sm_arena_t *a = sm_arena_new(NULL);
  void *p = sm_malloc(1 << 20); /* a large object in the root arena */
  sm_arena_t *root = sm_arena_of(p);
  sm_arena_enter(a); /* plain malloc now allocates in a */
  void *q = sm_realloc(p, 8 << 20);
  void *r = sm_malloc(8 << 20);
  printf("moved %p -> %p; realloc result in %s, malloc result in %s\n", p, q,
         sm_arena_of(q) == a      ? "the entered arena"
         : sm_arena_of(q) == root ? "the root (old arena)"
                                  : "?",
         sm_arena_of(r) == a ? "the entered arena" : "?");
  return sm_arena_of(q) != a;
}
