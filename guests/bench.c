/*
 * bench: a CPU-bound workload for measuring guest MIPS.  No interrupts, no
 * timers: a sieve of Eratosthenes, a CRC-32 over a buffer, and a loop of
 * small function calls, repeated ROUNDS times (or the number given as the
 * first word of the command line).  Prints one checksum so the work cannot
 * be optimised away and engines can be compared on the result.
 */
#include "common/rt.h"

#define SIEVE 65536
static uint8_t composite[SIEVE];
static uint8_t buf[16384];

static uint32_t sieve(void)
{
    memset(composite, 0, sizeof(composite));
    uint32_t count = 0;
    for (uint32_t i = 2; i < SIEVE; i++) {
        if (composite[i])
            continue;
        count++;
        for (uint32_t j = i * 2; j < SIEVE; j += i)
            composite[j] = 1;
    }
    return count;
}

static uint32_t crc32(const uint8_t *p, uint32_t n)
{
    uint32_t crc = 0xFFFFFFFFu;
    while (n--) {
        crc ^= *p++;
        for (int k = 0; k < 8; k++)
            crc = (crc >> 1) ^ (0xEDB88320u & -(crc & 1));
    }
    return ~crc;
}

static __attribute__((noinline)) uint32_t mix(uint32_t a, uint32_t b)
{
    return (a << 5) + (a >> 3) + b * 2654435761u;
}

static uint32_t parse_rounds(const char *s)
{
    /* Skip the kernel's file name (QEMU and ringback pass it first). */
    while (*s && *s != ' ')
        s++;
    while (*s == ' ')
        s++;
    uint32_t n = 0;
    while (*s >= '0' && *s <= '9')
        n = n * 10 + (uint32_t)(*s++ - '0');
    return n ? n : 20;
}

int kmain(uint32_t magic, struct multiboot_info *mbi)
{
    (void)magic;
    uint32_t rounds = (mbi->flags & (1 << 2)) ? parse_rounds((const char *)mbi->cmdline) : 20;
    uint32_t sum = 0;
    for (uint32_t i = 0; i < sizeof(buf); i++)
        buf[i] = (uint8_t)(i * 7 + 3);
    for (uint32_t r = 0; r < rounds; r++) {
        sum += sieve();
        buf[r % sizeof(buf)] ^= (uint8_t)sum;
        sum ^= crc32(buf, sizeof(buf));
        for (uint32_t i = 0; i < 20000; i++)
            sum = mix(sum, i);
    }
    printf("bench: %u rounds, checksum %08x\n", rounds, sum);
    return EXIT_OK;
}
