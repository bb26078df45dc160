/* measure: the harness's process meter (not a workload). Runs a program as its
 * child and reports the child's wall time and resource usage from wait4().
 *
 *   measure OUTFILE PROGRAM [ARG...]
 *
 * writes one line to OUTFILE: wall=S maxrss_kib=N user=S sys=S minflt=N majflt=N wstatus=N
 * and exits 0 (or 127 if it could not run PROGRAM; the status is in wstatus).
 *
 * Why not os.wait4 in the Python harness directly: Linux carries the peak RSS
 * of the address space a process had before exec() into its ru_maxrss, so a
 * child spawned by a Python interpreter of 18 MiB reports at least 18 MiB,
 * whatever it used. This meter is linked statically and stays tiny, so its
 * children report their own peak (the floor is this meter's few hundred KiB).
 * LD_PRELOAD does not apply to a static program: only the child gets it.
 */
#define _GNU_SOURCE
#include <stdio.h>
#include <sys/resource.h>
#include <sys/time.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static double now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static double tv(struct timeval t) { return (double)t.tv_sec + (double)t.tv_usec * 1e-6; }

int main(int argc, char **argv) {
  if (argc < 3) {
    fprintf(stderr, "usage: measure OUTFILE PROGRAM [ARG...]\n");
    return 2;
  }
  FILE *out = fopen(argv[1], "w");
  if (!out) {
    perror(argv[1]);
    return 2;
  }
  double t0 = now();
  pid_t pid = fork();
  if (pid < 0) {
    perror("fork");
    return 2;
  }
  if (pid == 0) {
    fclose(out);
    execvp(argv[2], argv + 2);
    perror(argv[2]);
    _exit(127);
  }
  int status = 0;
  struct rusage ru;
  while (wait4(pid, &status, 0, &ru) < 0) {
  }
  double t1 = now();
  fprintf(out, "wall=%.9f maxrss_kib=%ld user=%.6f sys=%.6f minflt=%ld majflt=%ld wstatus=%d\n", t1 - t0,
          ru.ru_maxrss, tv(ru.ru_utime), tv(ru.ru_stime), ru.ru_minflt, ru.ru_majflt, status);
  return fclose(out) == 0 ? 0 : 2;
}
