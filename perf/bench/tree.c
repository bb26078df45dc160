/* tree: build a tree of 1,000,000 small objects (24-64 B) in 1,111 nested groups, then tear it all down.
 *
 * One source, three builds:
 *   tree          plain malloc; teardown walks the tree and calls free() on every object.
 *   tree-arena    (-DTREE_ARENA) each group is a slotmalloc arena nested in its parent's;
 *                 teardown is sm_arena_close of the root (the pause), then releasing the
 *                 arenas and sm_collect(SIZE_MAX) to finish the deferred dismantling.
 *   tree-talloc   (-DTREE_TALLOC) each group is a talloc context under its parent's;
 *                 teardown is talloc_free of the root.
 * Extra results: build_s, teardown_s, pause_s (the close call alone; for free() and
 * talloc the whole teardown is the pause), groups, and for arenas stale_ok (a handle
 * taken before the close dereferences to NULL after it). All are CPU time of the
 * process (every thread's), so that waiting for a CPU on a busy machine does not
 * count; the program is single-threaded unless the allocator starts threads.
 */
#include "common.h"

#if defined(TREE_ARENA)
#include "slotmalloc.h"
typedef sm_arena_t *ctx_t;
#define MODE "arena"
#elif defined(TREE_TALLOC)
#include <talloc.h>
typedef void *ctx_t;
#define MODE "talloc"
#else
typedef void *ctx_t;
#define MODE "free"
#endif

#define FANOUT 10
#define DEPTH 3 /* 1 + 10 + 100 + 1000 groups; objects live in the 1000 leaf groups */

typedef struct node {
  struct node *child, *next;
  uint64_t key;
  char payload[]; /* 0-40 bytes */
} node_t;

typedef struct group {
  struct group *child, *next;
  node_t *nodes;
} group_t;

static ctx_t *all_ctx; /* every group's context, to release arenas after the close */
static size_t nctx;
static rng_t rng;
static node_t **scratch; /* the nodes of the group being built, for random parents */

static ctx_t ctx_new(ctx_t parent) {
  ctx_t c = NULL;
#if defined(TREE_ARENA)
  c = sm_arena_new(parent);
  if (!c) die("sm_arena_new");
#elif defined(TREE_TALLOC)
  c = talloc_new(parent);
  if (!c) die("talloc_new");
#else
  (void)parent;
#endif
  all_ctx[nctx++] = c;
  return c;
}

static inline void *ctx_alloc(ctx_t c, size_t n) {
  void *p;
#if defined(TREE_ARENA)
  p = sm_arena_malloc(c, n);
#elif defined(TREE_TALLOC)
  p = talloc_size(c, n);
#else
  (void)c;
  p = malloc(n);
#endif
  if (!p) die("alloc");
  return p;
}

static group_t *build(ctx_t parent, int depth, size_t per_leaf) {
  ctx_t c = ctx_new(parent);
  group_t *g = ctx_alloc(c, sizeof *g);
  g->child = g->next = NULL;
  g->nodes = NULL;
  if (depth == DEPTH) {
    for (size_t k = 0; k < per_leaf; k++) {
      size_t extra = rng_below(&rng, 41);
      node_t *n = ctx_alloc(c, sizeof(node_t) + extra);
      n->child = NULL;
      n->key = rng_next(&rng);
      if (extra) n->payload[0] = (char)k;
      if (k == 0) {
        n->next = NULL;
        g->nodes = n;
      } else { /* a random earlier node of this group is the parent */
        node_t *p = scratch[rng_below(&rng, k)];
        n->next = p->child;
        p->child = n;
      }
      scratch[k] = n;
    }
  } else {
    for (int i = 0; i < FANOUT; i++) {
      group_t *sub = build(c, depth + 1, per_leaf);
      sub->next = g->child;
      g->child = sub;
    }
  }
  return g;
}

#if !defined(TREE_ARENA) && !defined(TREE_TALLOC)
static uint64_t free_nodes(node_t *root) {
  /* iterative: a node's siblings and children are pushed before it is freed */
  uint64_t sum = 0;
  size_t cap = 1024, top = 0;
  node_t **stack = xmalloc(cap * sizeof *stack);
  if (root) stack[top++] = root;
  while (top) {
    node_t *n = stack[--top];
    if (top + 2 > cap) {
      cap *= 2;
      stack = realloc(stack, cap * sizeof *stack);
      if (!stack) die("realloc");
    }
    if (n->next) stack[top++] = n->next;
    if (n->child) stack[top++] = n->child;
    sum += n->key;
    free(n);
  }
  free(stack);
  return sum;
}
static uint64_t free_group(group_t *g) {
  uint64_t sum = free_nodes(g->nodes);
  for (group_t *s = g->child, *next; s; s = next) {
    next = s->next;
    sum += free_group(s);
  }
  free(g);
  return sum;
}
#endif

int main(int argc, char **argv) {
  args_t a = parse_args(argc, argv, 1);
  long long objects = iters(&a, 1000000);
  size_t leaves = 1;
  for (int d = 0; d < DEPTH; d++) leaves *= FANOUT;
  size_t per_leaf = (size_t)objects / leaves;
  if (per_leaf < 1) per_leaf = 1;
  size_t groups = 0;
  for (size_t l = 1, d = 0; d <= DEPTH; d++, l *= FANOUT) groups += l;
  all_ctx = xmalloc(groups * sizeof *all_ctx);
  scratch = xmalloc(per_leaf * sizeof *scratch);
  rng = rng_seed(2024);
  uint64_t check = 0;

  double t0 = cpu_sec();
  group_t *root = build(NULL, 0, per_leaf);
  double t1 = cpu_sec();
  double pause;
  char stale[32] = "";
#if defined(TREE_ARENA)
  sm_handle_t h = sm_handle_of(root->child->child->child->nodes);
  check = root->child->child->child->nodes->key;
  double c0 = cpu_sec();
  sm_arena_close(all_ctx[0]);
  double c1 = cpu_sec();
  pause = c1 - c0;
  snprintf(stale, sizeof stale, "stale_ok=%d", h != 0 && sm_deref(h) == NULL);
  for (size_t i = nctx; i-- > 0;) sm_arena_release(all_ctx[i]);
  sm_collect(SIZE_MAX);
#elif defined(TREE_TALLOC)
  check = root->child->child->child->nodes->key;
  double c0 = cpu_sec();
  talloc_free(all_ctx[0]);
  pause = cpu_sec() - c0;
#else
  check = free_group(root);
  pause = cpu_sec() - t1;
#endif
  double t2 = cpu_sec();
  free(scratch);
  free(all_ctx);
  char extra[160];
  snprintf(extra, sizeof extra, "mode=%s groups=%zu build_s=%.6f teardown_s=%.6f pause_s=%.9f%s%s", MODE, nctx,
           t1 - t0, t2 - t1, pause, *stale ? " " : "", stale);
  report("tree", &a, (unsigned long long)(per_leaf * leaves), t2 - t0, check, extra);
  return 0;
}
