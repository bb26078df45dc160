/* stats.c: statistics per arena, rolled up the tree, and process-wide; as a
 * struct, as text and as JSON; printed at exit with SLOTMALLOC_STATS=1. */
#include <stdio.h>
#include <string.h>

#include "internal.h"
#include "slots/generation.h"
#include "slots/os.h"

/* Live slots are those with an odd generation: exact at any moment, remote
 * frees not yet collected included, and counted 16 at a time. */
static void count_block(const smi_block_t *b, sm_stats_t *s) {
  size_t live = smi_block_live(b);
  s->objects_live += live;
  s->bytes_live += (size_t)live * b->size;
  s->blocks++;
}

/* One arena's own objects, under its lock. */
static void count_arena(sm_arena_t *a, sm_stats_t *s) {
  smi_lock(&a->lock);
  for (unsigned cls = 0; cls < SMI_CLASSES; cls++) {
    if (a->current[cls] != &smi_block_none) count_block(a->current[cls], s);
    for (smi_block_t *b = a->avail[cls].head; b; b = b->next) count_block(b, s);
  }
  for (smi_block_t *b = a->full.head; b; b = b->next) count_block(b, s);
  for (smi_segment_t *g = a->large; g; g = g->large_next) {
    s->objects_live++;
    s->large_objects++;
    s->bytes_live += g->large_size;
  }
  smi_unlock(&a->lock);
  s->arenas++;
}

static void count_subtree(sm_arena_t *a, sm_stats_t *s) {
  count_arena(a, s);
  for (sm_arena_t *c = a->first_child; c; c = c->next_sibling) count_subtree(c, s);
}

void sm_arena_stats(sm_arena_t *a, sm_stats_t *out) {
  if (!out) return;
  memset(out, 0, sizeof *out);
  smi_lock(&smi_tree_lock);
  if (a) count_subtree(a, out);
  else {
    smi_heap_each_root(count_subtree, out);
    count_subtree(&smi_orphans, out);
  }
  smi_unlock(&smi_tree_lock);
  if (!a) smi_pool_count_abandoned(out);
  out->bytes_committed = smi_os_committed();
  out->bytes_peak = smi_os_committed_peak();
}

size_t sm_stats_text(sm_arena_t *a, char *buf, size_t size) {
  sm_stats_t s;
  sm_arena_stats(a, &s);
  int n = snprintf(buf, size,
                   "slotmalloc stats (%s)\n"
                   "  objects live    %zu\n"
                   "  bytes live      %zu\n"
                   "  blocks          %zu\n"
                   "  large objects   %zu\n"
                   "  arenas          %zu\n"
                   "  bytes committed %zu\n"
                   "  peak committed  %zu\n",
                   a ? "arena" : "process", s.objects_live, s.bytes_live, s.blocks, s.large_objects, s.arenas,
                   s.bytes_committed, s.bytes_peak);
  return n < 0 ? 0 : (size_t)n;
}

size_t sm_stats_json(sm_arena_t *a, char *buf, size_t size) {
  sm_stats_t s;
  sm_arena_stats(a, &s);
  int n = snprintf(buf, size,
                   "{\"scope\":\"%s\",\"objects_live\":%zu,\"bytes_live\":%zu,\"blocks\":%zu,"
                   "\"large_objects\":%zu,\"arenas\":%zu,\"bytes_committed\":%zu,\"bytes_peak\":%zu}",
                   a ? "arena" : "process", s.objects_live, s.bytes_live, s.blocks, s.large_objects, s.arenas,
                   s.bytes_committed, s.bytes_peak);
  return n < 0 ? 0 : (size_t)n;
}

void smi_stats_at_exit(void) {
  if (!smi_opt.stats && !smi_opt.verbose) return;
  char text[1024];
  sm_stats_text(NULL, text, sizeof text);
  smi_message(text);
}
