/* 256 MiB anonymous mapping (the first half random, the second half compressible), a heap
 * block and a stack array, all with seeded patterns, checked byte for byte after restart. */
#include <stdint.h>
#include <sys/mman.h>
#include "prog.h"

static uint64_t gen(uint64_t i) { uint64_t x = i * 0x9E3779B97F4A7C15ull + 7; x ^= x >> 31; return x * 0xBF58476D1CE4E5B9ull; }
static uint64_t pat(uint64_t i, size_t words) { return i < words / 2 ? gen(i) : gen(i) % 16; }

int main(void)
{
    size_t len = 256u << 20;
    uint64_t *m = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    check(m != MAP_FAILED, "mmap");
    for (size_t i = 0; i < len / 8; i++)
        m[i] = pat(i, len / 8);
    uint64_t *heap = malloc(1 << 20);
    for (size_t i = 0; i < (1 << 17); i++)
        heap[i] = gen(i + 77);
    uint64_t stack[4096];
    for (size_t i = 0; i < 4096; i++)
        stack[i] = gen(i + 99);
    ready();
    wait_for_verify(NULL);
    for (size_t i = 0; i < len / 8; i++)
        check(m[i] == pat(i, len / 8), "256 MiB pattern");
    for (size_t i = 0; i < (1 << 17); i++)
        check(heap[i] == gen(i + 77), "heap pattern");
    for (size_t i = 0; i < 4096; i++)
        check(stack[i] == gen(i + 99), "stack pattern");
    check_untouched_signals();
    pass();
}
