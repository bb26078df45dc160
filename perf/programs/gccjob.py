"""Writes the C file that the gcc workload compiles with gcc -O2: argv[1] functions
(structs, switches, loops, inlining), deterministic, to stdout."""
import sys

n = int(sys.argv[1]) if len(sys.argv) > 1 else 300
out = ["#include <stddef.h>", "#include <string.h>", ""]
for i in range(n):
    out.append(f"""
struct s{i} {{ int a[{8 + i % 8}]; double d; const char *name; struct s{i} *next; }};
static inline int h{i}(int x) {{ return (x * {i * 2 + 3}) ^ (x >> {i % 7 + 1}); }}
int f{i}(struct s{i} *p, int n, const char *text) {{
  int acc = {i};
  for (int k = 0; k < n; k++) {{
    switch ((k + acc) & 7) {{
    case 0: acc += h{i}(k) + p->a[k % {8 + i % 8}]; break;
    case 1: acc ^= (int)strlen(text + (k % 3)); break;
    case 2: p->d = p->d * 1.{i % 9 + 1} + k; acc += (int)p->d; break;
    case 3: if (p->next) {{ p = p->next; acc -= k; }} break;
    case 4: for (int j = 0; j < {i % 5 + 2}; j++) acc += p->a[j] * j; break;
    case 5: acc = acc * {i % 13 + 1} + (text[k % 5] == 'x'); break;
    case 6: p->a[(k * {i % 3 + 1}) % {8 + i % 8}] = acc; break;
    default: acc = h{i}(acc) - {i}; break;
    }}
  }}
  return acc + (p->name ? (int)p->name[0] : 0);
}}""")
out.append("int all_f(void *p, int n, const char *t) {\n  int r = 0;")
for i in range(n):
    out.append(f"  r += f{i}((struct s{i} *)p, n, t);")
out.append("  return r;\n}")
print("\n".join(out))
