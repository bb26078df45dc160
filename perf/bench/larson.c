/* larson: a server simulation: each of -t threads keeps an array of slots and replaces random ones with objects of
 * random sizes (8-1000 B); at the end of its round it hands its array over to a new thread and exits, so most
 * objects are freed by a thread other than the one that allocated them: the pattern of larson.
 *
 * Every lineage (one per -t) runs ROUNDS rounds, each in a fresh thread that inherits the array of the one before.
 * The main thread frees what is left at the end. */
#include "common.h"

#define CHUNKS 5000
#define MIN_SIZE 8
#define MAX_SIZE 1000

typedef struct {
  void **slot;
  long long per_round; /* replacements a round */
  int rounds_left;
  uint64_t seed, check;
  unsigned long long ops;
} lineage_t;

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t all_done = PTHREAD_COND_INITIALIZER;
static int running;

static void *round_thread(void *arg) {
  lineage_t *l = arg;
  rng_t r = rng_seed(l->seed);
  uint64_t check = 0;
  for (long long s = 0; s < l->per_round; s++) {
    size_t i = rng_below(&r, CHUNKS);
    size_t n = MIN_SIZE + rng_below(&r, MAX_SIZE - MIN_SIZE + 1);
    if (l->slot[i]) {
      check += *(unsigned char *)l->slot[i];
      free(l->slot[i]);
    }
    char *p = malloc(n);
    if (!p) die("malloc");
    p[0] = (char)s;
    p[n - 1] = (char)i;
    l->slot[i] = p;
  }
  l->check += check;
  l->ops += (unsigned long long)l->per_round;
  l->seed = rng_next(&r);
  pthread_detach(pthread_self());
  if (--l->rounds_left > 0) { /* hand the array over to a new thread */
    pthread_t t;
    if (pthread_create(&t, NULL, round_thread, l) != 0) die("pthread_create");
  } else {
    pthread_mutex_lock(&lock);
    if (--running == 0) pthread_cond_signal(&all_done);
    pthread_mutex_unlock(&lock);
  }
  return NULL;
}

int main(int argc, char **argv) {
  args_t a = parse_args(argc, argv, 2);
  int rounds = 40;
  long long total = iters(&a, 10000000); /* replacements per lineage over all its rounds */
  lineage_t *ls = calloc((size_t)a.threads, sizeof *ls);
  if (!ls) die("calloc");
  for (int i = 0; i < a.threads; i++) {
    ls[i].slot = calloc(CHUNKS, sizeof(void *));
    if (!ls[i].slot) die("calloc");
    ls[i].per_round = total / rounds > 1 ? total / rounds : 1;
    ls[i].rounds_left = rounds;
    ls[i].seed = 31 + (uint64_t)i;
  }
  running = a.threads;
  double t0 = now_sec();
  for (int i = 0; i < a.threads; i++) {
    pthread_t t;
    if (pthread_create(&t, NULL, round_thread, &ls[i]) != 0) die("pthread_create");
  }
  pthread_mutex_lock(&lock);
  while (running > 0) pthread_cond_wait(&all_done, &lock);
  pthread_mutex_unlock(&lock);
  double t1 = now_sec();
  uint64_t check = 0;
  unsigned long long ops = 0;
  for (int i = 0; i < a.threads; i++) {
    check += ls[i].check;
    ops += ls[i].ops;
    for (int j = 0; j < CHUNKS; j++) free(ls[i].slot[j]);
    free(ls[i].slot);
  }
  char extra[64];
  snprintf(extra, sizeof extra, "rounds=%d chunks=%d", rounds, CHUNKS);
  report("larson", &a, ops, t1 - t0, check, extra);
  free(ls);
  return 0;
}
