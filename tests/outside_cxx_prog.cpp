// outside_cxx_prog.cpp: a C++ program for test_outside_cxx (helper R2), run
// three ways: with glibc's malloc, with LD_PRELOAD of libslotmalloc.so, and
// linked with libslotmalloc.a (SM_LINKED). Its output must be the same every
// way (no addresses, no timings); each mode exits 0 when its checks hold.
//   new       every form of operator new/delete (plain, array, sized, aligned, nothrow)
//   badalloc  std::bad_alloc and nothrow's nullptr under a tight RLIMIT_AS, then recovery
//   tls       std::thread with thread_local objects whose destructors allocate
//   map       std::map/std::string churn in 4 threads, objects handed between them
#include <dlfcn.h>
#include <malloc.h>
#include <sys/resource.h>
#include <unistd.h>

#include <atomic>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <mutex>
#include <new>
#include <string>
#include <thread>
#include <vector>

#ifdef SM_LINKED
#include "slotmalloc.h"
static void *(*arena_of)(const void *) = (void *(*)(const void *))sm_arena_of;
#else
static void *(*arena_of)(const void *);
#endif

static int failures;
#define CHECK(c)                                                   \
  do {                                                             \
    if (!(c)) {                                                    \
      std::fprintf(stderr, "%s:%d: %s\n", __FILE__, __LINE__, #c); \
      failures++;                                                  \
    }                                                              \
  } while (0)

// Ours when slotmalloc is in the process (sm_arena_of: the start of a live object of ours).
static void check_ours(const void *p) {
  if (arena_of) CHECK(arena_of(p) != nullptr);
}

struct alignas(256) Wide {
  char c[300];
};
struct alignas(64) Line {
  int v;
  Line() : v(7) {}
};

static void mode_new() {
  int *a = new int(5);
  check_ours(a);
  delete a;
  int *b = new int[100];
  check_ours(b);
  b[99] = 1;
  delete[] b;
  void *c = ::operator new(1000);
  check_ours(c);
  ::operator delete(c, 1000); // sized
  void *d = ::operator new[](5000);
  check_ours(d);
  ::operator delete[](d, 5000);
  const std::size_t aligns[] = {16, 64, 256, 4096, 65536, 1 << 21};
  for (std::size_t al : aligns) {
    for (std::size_t n : {std::size_t(1), std::size_t(100), al, 3 * al + 1, std::size_t(300000)}) {
      void *p = ::operator new(n, std::align_val_t(al));
      CHECK(reinterpret_cast<std::uintptr_t>(p) % al == 0);
      check_ours(p);
      std::memset(p, 1, n);
      if (n & 1) ::operator delete(p, std::align_val_t(al));
      else ::operator delete(p, n, std::align_val_t(al));
      void *q = ::operator new[](n, std::align_val_t(al), std::nothrow);
      CHECK(q && reinterpret_cast<std::uintptr_t>(q) % al == 0);
      ::operator delete[](q, std::align_val_t(al), std::nothrow);
    }
  }
  Wide *w = new Wide;
  CHECK(reinterpret_cast<std::uintptr_t>(w) % 256 == 0);
  check_ours(w);
  delete w;
  Line *l = new Line[10];
  CHECK(reinterpret_cast<std::uintptr_t>(l) % 64 == 0 && l[9].v == 7);
  delete[] l;
  int *e = new (std::nothrow) int[10];
  CHECK(e != nullptr);
  delete[] e;
  // impossible sizes: nothrow gives nullptr, the throwing forms std::bad_alloc
  volatile std::size_t huge = SIZE_MAX / 2;
  CHECK(::operator new(huge, std::nothrow) == nullptr);
  CHECK(::operator new[](huge, std::nothrow) == nullptr);
  CHECK(::operator new(huge, std::align_val_t(64), std::nothrow) == nullptr);
  int thrown = 0;
  try {
    void *p = ::operator new(huge);
    ::operator delete(p);
  } catch (const std::bad_alloc &) {
    thrown++;
  }
  try {
    volatile std::size_t n = SIZE_MAX / 16;
    long *p = new long[n];
    delete[] p;
  } catch (const std::bad_alloc &) {
    thrown++;
  }
  try {
    void *p = ::operator new(huge, std::align_val_t(4096));
    ::operator delete(p, std::align_val_t(4096));
  } catch (const std::bad_alloc &) {
    thrown++;
  }
  CHECK(thrown == 3);
  std::printf("new: %d bad_alloc\n", thrown);
}

static std::size_t vm_bytes() { // the mapped size, /proc/self/statm's first field
  FILE *f = std::fopen("/proc/self/statm", "r");
  unsigned long pages = 0;
  if (f) {
    if (std::fscanf(f, "%lu", &pages) != 1) pages = 0;
    std::fclose(f);
  }
  return pages * (std::size_t)sysconf(_SC_PAGESIZE);
}

static void mode_badalloc() {
  std::vector<std::string> warm(100, std::string(100, 'w')); // the allocator started
  struct rlimit rl = {vm_bytes() + (64u << 20), RLIM_INFINITY};
  CHECK(setrlimit(RLIMIT_AS, &rl) == 0);
  int caught = 0;
  try {
    std::vector<char> big(std::size_t(1) << 30); // past the limit
  } catch (const std::bad_alloc &) {
    caught++;
  }
  // a growing container until the limit: std::bad_alloc from inside push_back
  std::vector<std::string *> held;
  try {
    for (;;) held.push_back(new std::string(100000, 'x'));
  } catch (const std::bad_alloc &) {
    caught++;
  }
  CHECK(held.size() > 100); // 64 MiB of headroom: hundreds of 100 KB strings
  int nulls = 0;
  for (int i = 0; i < 10; i++) {
    char *p = new (std::nothrow) char[1 << 24];
    if (!p) nulls++;
    delete[] p;
  }
  CHECK(nulls == 10);
  for (std::string *s : held) delete s;
  held.clear();
  held.shrink_to_fit();
  // recovered: the memory given back serves again
  std::vector<std::string> again;
  for (int i = 0; i < 200; i++) again.emplace_back(100000, 'y');
  CHECK(again.back()[99999] == 'y');
  std::printf("badalloc: %d caught, nothrow null %d, recovered\n", caught, nulls);
}

static std::atomic<int> dtors;
static std::atomic<long> dtor_bytes;
struct Local {
  std::vector<std::string> v;
  std::map<int, std::string> m;
  ~Local() { // allocates while the thread ends
    std::string s(5000, 'd');
    std::vector<char *> tmp;
    for (int i = 0; i < 50; i++) tmp.push_back(new char[100 + i * 37]);
    for (char *p : tmp) delete[] p;
    dtor_bytes += (long)s.size() + (long)v.size() + (long)m.size();
    dtors++;
  }
};
thread_local Local local;
thread_local std::string local_str;

static void mode_tls() {
  for (int wave = 0; wave < 20; wave++) {
    std::vector<std::thread> t;
    for (int i = 0; i < 8; i++)
      t.emplace_back([i] {
        for (int k = 0; k < 100; k++) local.v.emplace_back(50 + k * i, 'v');
        for (int k = 0; k < 50; k++) local.m[k] = std::string(200, 'm');
        local_str.assign(3000, 's');
      });
    for (auto &x : t) x.join();
  }
  CHECK(dtors == 160);
  std::printf("tls: %d destructors, %ld\n", dtors.load(), dtor_bytes.load());
}

static std::uint64_t next(std::uint64_t &s) {
  s ^= s << 13;
  s ^= s >> 7;
  s ^= s << 17;
  return s;
}

static void mode_map() {
  std::mutex mu;
  std::vector<std::map<std::string, std::string>> inbox(4);
  std::vector<std::uint64_t> sums(4);
  std::vector<std::thread> t;
  for (int id = 0; id < 4; id++)
    t.emplace_back([&, id] {
      std::uint64_t r = 0x9E3779B97F4A7C15ull * (id + 1);
      std::map<std::string, std::string> m;
      std::uint64_t sum = 0;
      for (int i = 0; i < 60000; i++) {
        std::uint64_t x = next(r);
        std::string k = "k" + std::to_string(x % 5000);
        switch (x >> 60) {
          case 0:
          case 1: m.erase(k); break;
          case 2: { // hand a piece to the next thread
            auto it = m.lower_bound(k);
            if (it != m.end()) {
              std::lock_guard<std::mutex> g(mu);
              inbox[(id + 1) % 4][it->first + "/" + std::to_string(id)] = std::move(it->second);
              m.erase(it);
            }
            break;
          }
          default: m[k] = std::string(1 + (x >> 20) % 700, char('a' + x % 26));
        }
      }
      for (auto &kv : m) sum += kv.first.size() * 31 + kv.second.size() + (unsigned char)kv.second[0];
      sums[id] = sum + m.size();
    });
  for (auto &x : t) x.join();
  for (int id = 0; id < 4; id++) {
    std::uint64_t s = 0;
    for (auto &kv : inbox[id]) s += kv.first.size() + kv.second.size();
    std::printf("map: thread %d: %llu, inbox %zu %llu\n", id, (unsigned long long)sums[id], inbox[id].size(),
                (unsigned long long)s);
  }
}

int main(int argc, char **argv) {
#ifndef SM_LINKED
  arena_of = (void *(*)(const void *))dlsym(RTLD_DEFAULT, "sm_arena_of");
#endif
  const char *m = argc > 1 ? argv[1] : "";
  if (!std::strcmp(m, "new")) mode_new();
  else if (!std::strcmp(m, "badalloc")) mode_badalloc();
  else if (!std::strcmp(m, "tls")) mode_tls();
  else if (!std::strcmp(m, "map")) mode_map();
  else return 2;
  std::fflush(stdout);
  return failures ? 1 : 0;
}
