/* unit_check.c: the debug build's invariant checks (alloc/check.c) catch
 * corrupted metadata. Each test builds real blocks (a fresh segment, cut and
 * extended as the allocator does), shows that the check passes on them, then
 * corrupts them on purpose in a forked child, runs the check there and
 * expects the child to die of SIGABRT after printing the invariant's line and
 * "slotmalloc: corrupted metadata at 0x...". Skipped unless the library was
 * built with -DSLOTMALLOC_DEBUG=ON (the checks are not built otherwise, so
 * they are referenced weakly here). Linked with the static library. */
#define _GNU_SOURCE
#include <criterion/criterion.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include "alloc/check.h"
#include "slots/generation.h"
#include "slots/segment.h"

#pragma weak smi_check_block_at
#pragma weak smi_check_arena_at
#pragma weak smi_check_class_at
#pragma weak smi_check_pool_at

#define CLS 0 /* 16-byte slots: a small block, thousands of slots */

static void need_checks(void) {
  if (!smi_check_enabled() || !smi_check_block_at)
    cr_skip_test("the library is not a debug build (-DSLOTMALLOC_DEBUG=ON)");
}

/* ---- blocks driven the way the allocator drives them -------------------------- */

static smi_segment_t *seg;

static smi_block_t *block(unsigned index) {
  if (!seg) seg = smi_segment_new(smi_kind_of_class(CLS));
  cr_assert_not_null(seg);
  smi_block_t *b = &seg->blocks[index];
  cr_assert(smi_block_format(b, CLS));
  cr_assert(smi_block_extend(b));
  return b;
}

static uint32_t index_of(smi_block_t *b, void *p) { return smi_slot_index(b, (uintptr_t)p); }

static void *take(smi_block_t *b) { /* the malloc fast path */
  smi_free_t *p = b->free;
  cr_assert_not_null(p);
  b->free = p->next;
  b->used++;
  uint8_t *g = &b->gens[index_of(b, p)];
  *g = smi_gen_allocated(*g);
  return p;
}

static void give(smi_block_t *b, void *p) { /* the free fast path */
  uint8_t *g = &b->gens[index_of(b, p)];
  *g = smi_gen_freed(*g);
  ((smi_free_t *)p)->next = b->free;
  b->free = p;
  b->used--;
}

static void give_remote(smi_block_t *b, void *p) { /* another thread's free, not yet collected */
  uint8_t g = b->gens[index_of(b, p)];
  b->gens[index_of(b, p)] = smi_gen_freed(g);
  ((smi_free_t *)p)->next = (smi_free_t *)(atomic_load(&b->remote) | (g == SMI_GEN_LAST));
  atomic_store(&b->remote, (uintptr_t)p);
}

/* A block in every state at once: live, freed locally, freed remotely, a
 * retired slot (its generation wrapped), never handed out. */
static smi_block_t *busy_block(unsigned index, void **objs, int n) {
  smi_block_t *b = block(index);
  for (int i = 0; i < n; i++) objs[i] = take(b);
  give(b, objs[1]);
  give(b, objs[3]);
  give_remote(b, objs[4]);
  give_remote(b, objs[6]);
  uint32_t i7 = index_of(b, objs[7]); /* slot 7 wraps: free_local's rule */
  b->gens[i7] = SMI_GEN_WRAPPED;
  b->retired++;
  b->used--;
  return b;
}

/* ---- running a check in a child ----------------------------------------------- */

typedef void (*scene_t)(void);

/* Runs scene in a child with stderr captured; returns its wait status. */
static int in_child(scene_t scene, char *err, size_t errsz) {
  int fd[2];
  cr_assert_eq(pipe(fd), 0);
  fflush(NULL);
  pid_t pid = fork();
  cr_assert_geq(pid, 0);
  if (pid == 0) {
    struct rlimit r = {0, 0};
    setrlimit(RLIMIT_CORE, &r);
    close(fd[0]);
    dup2(fd[1], STDERR_FILENO);
    scene();
    _exit(0);
  }
  close(fd[1]);
  size_t n = 0;
  ssize_t k;
  while (n < errsz - 1 && (k = read(fd[0], err + n, errsz - 1 - n)) > 0) n += (size_t)k;
  err[n] = 0;
  close(fd[0]);
  int status;
  cr_assert_eq(waitpid(pid, &status, 0), pid);
  return status;
}

static void expect_pass(scene_t scene) {
  char err[2048];
  int status = in_child(scene, err, sizeof err);
  cr_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0, "the check fired on sound metadata:\n%s", err);
}

static void expect_abort(scene_t scene, const char *what) {
  char err[2048];
  int status = in_child(scene, err, sizeof err);
  cr_assert(WIFSIGNALED(status) && WTERMSIG(status) == SIGABRT, "the check did not abort (status %#x):\n%s", status,
            err);
  cr_assert_not_null(strstr(err, "slotmalloc: check failed in "), "no check line:\n%s", err);
  cr_assert_not_null(strstr(err, what), "expected \"%s\" in:\n%s", what, err);
  cr_assert_not_null(strstr(err, "slotmalloc: corrupted metadata at 0x"), "no corruption report:\n%s", err);
}

/* ---- blocks ------------------------------------------------------------------ */

static void *objs[16];

static void sound_block(void) {
  smi_block_t *b = busy_block(0, objs, 16);
  smi_check_block_at(b, 0, "unit_check");
  b->used++; /* now pinned as a current block */
  smi_check_block_at(b, 1, "unit_check");
}

static void link_into_a_slot(void) {
  smi_block_t *b = busy_block(0, objs, 16);
  b->free->next = (smi_free_t *)((char *)b->free->next + 8);
  smi_check_block_at(b, 0, "unit_check");
}

static void link_cycle(void) {
  smi_block_t *b = busy_block(0, objs, 16);
  b->free->next->next = b->free;
  smi_check_block_at(b, 0, "unit_check");
}

static void link_out_of_block(void) {
  smi_block_t *b = busy_block(0, objs, 16);
  static smi_free_t elsewhere;
  b->free->next = &elsewhere;
  smi_check_block_at(b, 0, "unit_check");
}

static void used_off_by_one(void) {
  smi_block_t *b = busy_block(0, objs, 16);
  b->used++;
  smi_check_block_at(b, 0, "unit_check");
}

static void slot_lost(void) { /* freed (generation free) but on no list, used lowered */
  smi_block_t *b = busy_block(0, objs, 16);
  b->gens[index_of(b, objs[9])] = smi_gen_freed(b->gens[index_of(b, objs[9])]);
  b->used--;
  smi_check_block_at(b, 0, "unit_check");
}

static void current_unpinned(void) {
  smi_block_t *b = busy_block(0, objs, 16);
  smi_check_block_at(b, 1, "unit_check");
}

static void live_past_bump(void) {
  smi_block_t *b = busy_block(0, objs, 16);
  b->gens[b->bump + 1] = SMI_GEN_LIVE | 1;
  smi_check_block_at(b, 0, "unit_check");
}

static void free_slot_live(void) {
  smi_block_t *b = busy_block(0, objs, 16);
  b->gens[index_of(b, b->free)] = smi_gen_allocated(b->gens[index_of(b, b->free)]);
  smi_check_block_at(b, 0, "unit_check");
}

static void remote_slot_live(void) { /* pushed without its generation advanced */
  smi_block_t *b = busy_block(0, objs, 16);
  ((smi_free_t *)objs[10])->next = (smi_free_t *)atomic_load(&b->remote);
  atomic_store(&b->remote, (uintptr_t)objs[10]);
  smi_check_block_at(b, 0, "unit_check");
}

static void retired_too_many(void) {
  smi_block_t *b = busy_block(0, objs, 16);
  b->retired++;
  smi_check_block_at(b, 0, "unit_check");
}

Test(check, sound_block_passes) {
  need_checks();
  expect_pass(sound_block);
}
Test(check, freelist_link_into_a_slot) {
  need_checks();
  expect_abort(link_into_a_slot, "freelist link is not a slot start");
}
Test(check, freelist_cycle) {
  need_checks();
  expect_abort(link_cycle, "freelist has a cycle");
}
Test(check, freelist_link_out_of_block) {
  need_checks();
  expect_abort(link_out_of_block, "freelist link is not a slot start");
}
Test(check, used_off_by_one) {
  need_checks();
  expect_abort(used_off_by_one, "used disagrees with the slots");
}
Test(check, slot_lost) {
  need_checks();
  expect_abort(slot_lost, "used disagrees with the slots");
}
Test(check, current_block_unpinned) {
  need_checks();
  expect_abort(current_unpinned, "used disagrees with the slots");
}
Test(check, live_past_bump) {
  need_checks();
  expect_abort(live_past_bump, "past bump) is live");
}
Test(check, free_slot_live) {
  need_checks();
  expect_abort(free_slot_live, "free slot has a live generation");
}
Test(check, remote_slot_live) {
  need_checks();
  expect_abort(remote_slot_live, "remote slot generation live");
}
Test(check, retired_count_too_high) {
  need_checks();
  expect_abort(retired_too_many, "retired count above");
}

/* ---- arenas ------------------------------------------------------------------ */

static sm_arena_t arena;

/* A user arena: a current block, two on the avail list, one on the full list. */
static smi_block_t *blocks[4];
static void build_arena(void) {
  smi_arena_init(&arena, SMI_ARENA_USER);
  void *o[16];
  for (int i = 0; i < 4; i++) {
    smi_block_t *b = blocks[i] = busy_block((unsigned)i, o, 16);
    b->arena = &arena;
    b->owner = &arena;
    b->flags |= SMI_BLOCK_USER;
  }
  blocks[0]->used++;
  smi_arena_set_current(&arena, CLS, blocks[0]);
  smi_blist_push(&arena.avail[CLS], blocks[1]);
  smi_blist_push(&arena.avail[CLS], blocks[2]);
  blocks[3]->owner = (sm_arena_t *)((uintptr_t)&arena | 1);
  smi_blist_push(&arena.full, blocks[3]);
}

static void sound_arena(void) {
  build_arena();
  smi_check_arena_at(&arena, true, "unit_check");
  smi_check_class_at(&arena, CLS, "unit_check");
}
static void arena_prev_link(void) {
  build_arena();
  blocks[1]->prev = blocks[1];
  smi_check_arena_at(&arena, false, "unit_check");
}
static void arena_list_cycle(void) {
  build_arena();
  blocks[1]->next = blocks[2]; /* 2 -> 1 -> 2 ... */
  smi_check_arena_at(&arena, false, "unit_check");
}
static void arena_wrong_tail(void) {
  build_arena();
  arena.avail[CLS].tail = blocks[2];
  smi_check_arena_at(&arena, false, "unit_check");
}
static void arena_wrong_class(void) {
  build_arena();
  smi_blist_remove(&arena.avail[CLS], blocks[1]);
  smi_blist_push(&arena.avail[CLS + 1], blocks[1]);
  smi_check_arena_at(&arena, false, "unit_check");
}
static void arena_full_untagged(void) {
  build_arena();
  blocks[3]->owner = &arena;
  smi_check_arena_at(&arena, false, "unit_check");
}
static void arena_direct_stale(void) {
  build_arena();
  arena.direct[1] = blocks[1];
  smi_check_arena_at(&arena, false, "unit_check");
}
static void arena_current_unpinned(void) {
  build_arena();
  blocks[0]->used = 0;
  smi_check_class_at(&arena, CLS, "unit_check");
}
static void arena_block_corrupt(void) { /* the contents check reaches the blocks */
  build_arena();
  blocks[2]->used += 3;
  smi_check_arena_at(&arena, true, "unit_check");
}
static void arena_foreign_block(void) {
  build_arena();
  blocks[2]->arena = NULL;
  smi_check_arena_at(&arena, false, "unit_check");
}

Test(check, sound_arena_passes) {
  need_checks();
  expect_pass(sound_arena);
}
Test(check, arena_prev_link) {
  need_checks();
  expect_abort(arena_prev_link, "prev link does not name the block before");
}
Test(check, arena_list_cycle) {
  need_checks();
  expect_abort(arena_list_cycle, "avail list: ");
}
Test(check, arena_wrong_tail) {
  need_checks();
  expect_abort(arena_wrong_tail, "tail is not the last block");
}
Test(check, arena_wrong_class) {
  need_checks();
  expect_abort(arena_wrong_class, "block of another size class");
}
Test(check, arena_full_block_untagged) {
  need_checks();
  expect_abort(arena_full_untagged, "owner tag is not the arena's full tag");
}
Test(check, arena_direct_stale) {
  need_checks();
  expect_abort(arena_direct_stale, "direct slot does not follow the current block");
}
Test(check, arena_current_unpinned) {
  need_checks();
  expect_abort(arena_current_unpinned, "current block not pinned");
}
Test(check, arena_block_contents) {
  need_checks();
  expect_abort(arena_block_corrupt, "used disagrees with the slots");
}
Test(check, arena_foreign_block) {
  need_checks();
  expect_abort(arena_foreign_block, "block's arena is not the arena");
}

/* ---- the pool ------------------------------------------------------------------ */

static smi_blist_t p_empty[SMI_KINDS_OF_BLOCKS], p_abandoned[SMI_CLASSES], p_abandoned_full[SMI_CLASSES], p_dismantle;

static void build_pool(void) {
  void *o[16];
  smi_block_t *e = block(0), *ab = busy_block(1, o, 16);
  ab->arena = &smi_orphans;
  smi_blist_push(&p_empty[e->kind], e);
  smi_segment_at((uintptr_t)e)->pooled++; /* as pool.c's empty_push counts it */
  smi_blist_push(&p_abandoned[CLS], ab);
}
static void sound_pool(void) {
  build_pool();
  smi_check_pool_at(p_empty, p_abandoned, p_abandoned_full, &p_dismantle, true, "unit_check");
  smi_check_pool_at(p_empty, p_abandoned, p_abandoned_full, &p_dismantle, false, "unit_check");
}
static void pool_empty_owned(void) {
  build_pool();
  p_empty[SMI_KIND_SMALL].head->owner = &arena;
  smi_check_pool_at(p_empty, p_abandoned, p_abandoned_full, &p_dismantle, false, "unit_check");
}
static void pool_count_stale(void) { /* a segment counts a block no empty list holds */
  build_pool();
  smi_segment_at((uintptr_t)p_empty[SMI_KIND_SMALL].head)->pooled++;
  smi_check_pool_at(p_empty, p_abandoned, p_abandoned_full, &p_dismantle, true, "unit_check");
}
static void pool_abandoned_corrupt(void) {
  build_pool();
  smi_block_t *b = p_abandoned[CLS].head;
  b->free->next = (smi_free_t *)((char *)b->start - 16);
  smi_check_pool_at(p_empty, p_abandoned, p_abandoned_full, &p_dismantle, true, "unit_check");
}

Test(check, sound_pool_passes) {
  need_checks();
  expect_pass(sound_pool);
}
Test(check, pool_empty_block_owned) {
  need_checks();
  expect_abort(pool_empty_owned, "empty block still has an owner or an arena");
}
Test(check, pool_count_stale) {
  need_checks();
  expect_abort(pool_count_stale, "blocks on the empty lists vs the segments' pooled counts");
}
Test(check, pool_abandoned_block_contents) {
  need_checks();
  expect_abort(pool_abandoned_corrupt, "freelist link is not a slot start");
}

/* Whatever the build, smi_check_enabled answers (the release build compiles the checks out). */
Test(check, enabled_answers) { cr_assert_eq(smi_check_enabled(), smi_check_block_at != NULL); }
