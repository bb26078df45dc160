/* unit_switch.c: block switches (alloc/arena.c switch_block, take_avail)
 * when the free slots of a class are spread thin over many blocks: a steady
 * live set whose objects are replaced at random (a cache of fixed-size
 * records). Every free lands in a random, mostly full block, every malloc
 * takes from the current block; with a few free slots in all, a switch finds
 * blocks with one or two of them and the next malloc switches again. Linked
 * with the static library: the arena's count of slow calls and the blocks'
 * geometry are read directly. */
#define _GNU_SOURCE /* testutil.h */
#include <criterion/criterion.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>

#include "alloc/internal.h"
#include "testutil.h"

#define SIZE 128
#define BLOCKS 64
#define STEPS 100000

static tu_rng_t rng = {88172645463325252u};
static size_t below(size_t n) { return tu_rng_range(&rng, 0, n - 1); }

typedef struct {
  uint32_t slow;            /* replacements that took the allocation slow path */
  size_t blocks, per_block; /* blocks holding the live set at the end; slots per block */
} result_t;

static void *replace_at_random(void *arg) {
  result_t *r = arg;
  void *probe = sm_malloc(SIZE);
  cr_assert_not_null(probe);
  size_t per_block = smi_block_of(probe)->nslots;
  sm_free(probe);
  /* BLOCKS blocks' worth but 2 slots: 2 free slots in all, or a few more if
   * the heap had a partly used block of the class already */
  size_t live = BLOCKS * per_block - 2;
  void **objs = calloc(live, sizeof *objs);
  cr_assert_not_null(objs);
  for (size_t i = 0; i < live; i++) cr_assert_not_null(objs[i] = sm_malloc(SIZE));
  sm_arena_t *a = smi_tls_cur;
  uint32_t slow_before = a->slow_calls;
  for (size_t s = 0; s < STEPS; s++) {
    size_t i = below(live);
    sm_free(objs[i]);
    cr_assert_not_null(objs[i] = sm_malloc(SIZE));
  }
  uint32_t slow = a->slow_calls - slow_before;
  /* the blocks holding the live set at the end */
  smi_block_t **seen = calloc(live, sizeof *seen);
  cr_assert_not_null(seen);
  size_t blocks = 0;
  for (size_t i = 0; i < live; i++) {
    smi_block_t *b = smi_block_of(objs[i]);
    size_t k = 0;
    while (k < blocks && seen[k] != b) k++;
    if (k == blocks) seen[blocks++] = b;
    sm_free(objs[i]);
  }
  free(seen);
  free(objs);
  *r = (result_t){.slow = slow, .blocks = blocks, .per_block = per_block};
  return NULL;
}

Test(block_switch, thinly_spread_free_slots_do_not_make_every_malloc_slow, .timeout = 120) {
  pthread_t t; /* a thread of its own: a root arena with nothing of the class yet */
  result_t r;
  cr_assert_eq(pthread_create(&t, NULL, replace_at_random, &r), 0);
  pthread_join(t, NULL);
  cr_log_info("%u slow calls in %d replacements; %zu blocks of %zu slots", r.slow, STEPS, r.blocks, r.per_block);
  cr_assert_lt(r.slow, STEPS / 8,
               "%u of %d replacements took the allocation slow path (a block switch every few mallocs: the "
               "switch took blocks with one or two free slots)",
               r.slow, STEPS);
  /* what the rule may cost: 1/32 of the class's slots more, and a block or two */
  cr_assert_leq(r.blocks, BLOCKS + BLOCKS / 32 + 2, "the live set ended in %zu blocks of %zu slots (%d needed)",
                r.blocks, r.per_block, BLOCKS);
}
