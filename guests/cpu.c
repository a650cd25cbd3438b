/*
 * cpu: integer instruction self-test whose output is diffed between QEMU
 * (TCG) and ringback.  It runs ALU ops, multiply/divide (including #DE
 * cases), shifts and rotates, double shifts, bit tests and scans, bswap,
 * xadd, cmpxchg, cmpxchg8b, setcc/cmovcc, BCD adjusts, string ops with
 * rep and both directions, lea forms (including 16-bit addressing),
 * segment register push/pop and pushf/popf, printing one "name: value"
 * line per case.  EFLAGS are printed only for the bits the SDM defines
 * for that instruction (undefined bits are masked out), so every line
 * must match exactly.  Nothing machine-specific (cpuid, rdtsc) is printed.
 */
#include "common/rt.h"

#define CF 0x001
#define PF 0x004
#define AF 0x010
#define ZF 0x040
#define SF 0x080
#define OF 0x800
#define ARITH (CF | PF | AF | ZF | SF | OF)
#define LOGIC (CF | PF | ZF | SF | OF) /* AF undefined */
#define SZP (SF | ZF | PF)
#define F0 0x002u           /* all status flags clear */
#define F1 (0x002u | ARITH) /* all status flags set */

#define NOINLINE __attribute__((noinline))

/* Run "insn" with %[d] (in/out) and %[c] (ecx, input) after loading EFLAGS
 * from fin; yields the new d and EFLAGS. */
#define RUN(insn, dval, cval, fin, rd, rf)                                                                      \
    __asm__ volatile("pushl %[fi]\n\tpopfl\n\t" insn "\n\tpushfl\n\tpopl %[fo]"                                 \
                     : [d] "+q"(rd), [fo] "=&r"(rf)                                                             \
                     : [c] "c"(cval), [fi] "r"(fin)                                                             \
                     : "cc", "memory");                                                                         \
    (void)(dval)

static void line(const char *name, uint32_t a, uint32_t b, uint32_t fin, uint32_t r, uint32_t f, uint32_t mask)
{
    printf("%s %08x,%08x fl=%03x: %08x fl=%03x\n", name, a, b, fin & ARITH, r, f & mask);
}

#define BIN(name, insn, a, b, fin, mask)                                                                        \
    do {                                                                                                        \
        uint32_t _d = (a), _f;                                                                                  \
        RUN(insn, a, (b), (fin), _d, _f);                                                                       \
        line(name, (a), (b), (fin), _d, _f, (mask));                                                            \
    } while (0)

static const uint32_t pairs[][2] = {
    {0x7FFFFFFF, 0x00000001}, {0xFFFFFFFF, 0x00000001}, {0x80000000, 0x80000000},
    {0x12345678, 0x0FEDCBA9}, {0x00000000, 0x00000000}, {0x00000005, 0x00000007},
};
#define NPAIRS (sizeof pairs / sizeof pairs[0])

static NOINLINE void test_alu(void)
{
    for (uint32_t i = 0; i < NPAIRS; i++) {
        uint32_t a = pairs[i][0], b = pairs[i][1];
        BIN("add", "addl %[c], %[d]", a, b, F0, ARITH);
        BIN("sub", "subl %[c], %[d]", a, b, F0, ARITH);
        BIN("cmp", "cmpl %[c], %[d]", a, b, F0, ARITH);
        BIN("adc", "adcl %[c], %[d]", a, b, F0, ARITH);
        BIN("adc", "adcl %[c], %[d]", a, b, F1, ARITH);
        BIN("sbb", "sbbl %[c], %[d]", a, b, F0, ARITH);
        BIN("sbb", "sbbl %[c], %[d]", a, b, F1, ARITH);
        BIN("and", "andl %[c], %[d]", a, b, F1, LOGIC);
        BIN("or", "orl %[c], %[d]", a, b, F1, LOGIC);
        BIN("xor", "xorl %[c], %[d]", a, b, F1, LOGIC);
        BIN("test", "testl %[c], %[d]", a, b, F1, LOGIC);
        /* 8- and 16-bit forms of add/sub on the low parts. */
        BIN("addb", "addb %b[c], %b[d]", a, b, F0, ARITH);
        BIN("subw", "subw %w[c], %w[d]", a, b, F0, ARITH);
    }
    static const uint32_t vals[] = {0, 1, 0x7FFFFFFF, 0x80000000, 0xFFFFFFFF, 0x000000FF};
    for (uint32_t i = 0; i < sizeof vals / sizeof vals[0]; i++) {
        uint32_t a = vals[i];
        BIN("neg", "negl %[d]", a, 0, F0, ARITH);
        BIN("inc", "incl %[d]", a, 0, F1, ARITH); /* CF is preserved: defined */
        BIN("inc", "incl %[d]", a, 0, F0, ARITH);
        BIN("dec", "decl %[d]", a, 0, F1, ARITH);
        BIN("incb", "incb %b[d]", a, 0, F0, ARITH);
        BIN("decw", "decw %w[d]", a, 0, F0, ARITH);
        BIN("not", "notl %[d]", a, 0, F1, ARITH); /* no flags change */
        BIN("movsbl", "movsbl %b[c], %[d]", a, a, F0, 0);
        BIN("movzwl", "movzwl %w[c], %[d]", a, a, F0, 0);
        BIN("cbw/cwde", "xchgl %[d], %%eax\n\tcbw\n\tcwde\n\txchgl %[d], %%eax", a, 0, F0, 0);
    }
}

static NOINLINE void test_cdq(void)
{
    static const uint32_t vals[] = {0x7FFFFFFF, 0x80000000, 0x00008000};
    for (uint32_t i = 0; i < 3; i++) {
        uint32_t a = vals[i], d = 0x12345678, w = 0x12345678;
        __asm__ volatile("cdq" : "+a"(a), "+d"(d));
        a = vals[i];
        __asm__ volatile("cwd" : "+a"(a), "+d"(w));
        printf("cdq/cwd %08x: edx %08x, cwd edx %08x\n", vals[i], d, w);
    }
}

static NOINLINE void test_mul(void)
{
    static const uint32_t mp[][2] = {{0xFFFFFFFF, 0xFFFFFFFF}, {2, 3}, {0x80000000, 0xFFFFFFFF},
                                     {0x00010000, 0x00010000}, {0xFFFFFFFF, 1}, {0x7FFFFFFF, 2}};
    for (uint32_t i = 0; i < sizeof mp / sizeof mp[0]; i++) {
        uint32_t a = mp[i][0], b = mp[i][1], lo, hi, f;
        __asm__ volatile("pushl %[fi]; popfl; mull %[b]; pushfl; popl %[f]"
                         : "=a"(lo), "=d"(hi), [f] "=&r"(f)
                         : "a"(a), [b] "r"(b), [fi] "r"(F0)
                         : "cc");
        printf("mul %08x,%08x: %08x%08x fl=%03x\n", a, b, hi, lo, f & (CF | OF));
        __asm__ volatile("pushl %[fi]; popfl; imull %[b]; pushfl; popl %[f]"
                         : "=a"(lo), "=d"(hi), [f] "=&r"(f)
                         : "a"(a), [b] "r"(b), [fi] "r"(F0)
                         : "cc");
        printf("imul1 %08x,%08x: %08x%08x fl=%03x\n", a, b, hi, lo, f & (CF | OF));
        lo = a;
        __asm__ volatile("pushl %[fi]; popfl; imull %[b], %[d]; pushfl; popl %[f]"
                         : [d] "+r"(lo), [f] "=&r"(f)
                         : [b] "r"(b), [fi] "r"(F0)
                         : "cc");
        printf("imul2 %08x,%08x: %08x fl=%03x\n", a, b, lo, f & (CF | OF));
        __asm__ volatile("pushl %[fi]; popfl; imull $-3, %[b], %[d]; pushfl; popl %[f]"
                         : [d] "=r"(lo), [f] "=&r"(f)
                         : [b] "r"(a), [fi] "r"(F0)
                         : "cc");
        printf("imul3 %08x,-3: %08x fl=%03x\n", a, lo, f & (CF | OF));
        lo = a;
        __asm__ volatile("pushl %[fi]; popfl; mulb %b[b]; pushfl; popl %[f]"
                         : "+a"(lo), [f] "=&r"(f)
                         : [b] "q"(b), [fi] "r"(F0)
                         : "cc");
        printf("mulb %02x,%02x: ax %04x fl=%03x\n", a & 0xFF, b & 0xFF, lo & 0xFFFF, f & (CF | OF));
        lo = a;
        __asm__ volatile("pushl %[fi]; popfl; imulb %b[b]; pushfl; popl %[f]"
                         : "+a"(lo), [f] "=&r"(f)
                         : [b] "q"(b), [fi] "r"(F0)
                         : "cc");
        printf("imulb %02x,%02x: ax %04x fl=%03x\n", a & 0xFF, b & 0xFF, lo & 0xFFFF, f & (CF | OF));
        lo = a;
        hi = 0x55555555;
        __asm__ volatile("pushl %[fi]; popfl; mulw %w[b]; pushfl; popl %[f]"
                         : "+a"(lo), "+d"(hi), [f] "=&r"(f)
                         : [b] "r"(b), [fi] "r"(F0)
                         : "cc");
        printf("mulw %04x,%04x: dx:ax %08x %08x fl=%03x\n", a & 0xFFFF, b & 0xFFFF, hi, lo, f & (CF | OF));
    }
}

/* #DE recovery: the handler resumes at de_resume and records the eip. */
volatile uint32_t de_resume, de_insn, de_eip, de_count;

static void de_handler(struct regs *r)
{
    de_count++;
    de_eip = r->eip;
    r->eip = de_resume;
}

static void div_line(const char *name, uint32_t hi, uint32_t lo, uint32_t d, uint32_t c0, uint32_t q, uint32_t r)
{
    if (de_count != c0)
        printf("%s %08x%08x/%08x: #DE %s\n", name, hi, lo, d, de_eip == de_insn ? "at the divide" : "at WRONG eip");
    else
        printf("%s %08x%08x/%08x: q %08x r %08x\n", name, hi, lo, d, q, r);
}

#define DIV(insn, hi, lo, d, q, r)                                                                              \
    __asm__ volatile("movl $0f, de_insn\n\tmovl $1f, de_resume\n0:\t" insn " %[dv]\n1:"                         \
                     : "=a"(q), "=d"(r)                                                                         \
                     : "a"(lo), "d"(hi), [dv] "r"(d)                                                           \
                     : "cc", "memory")
#define DIVB(insn, ax, d, q)                                                                                    \
    __asm__ volatile("movl $0f, de_insn\n\tmovl $1f, de_resume\n0:\t" insn " %b[dv]\n1:"                       \
                     : "=a"(q)                                                                                  \
                     : "a"(ax), [dv] "q"(d)                                                                     \
                     : "cc", "memory")

static NOINLINE void test_div(void)
{
    static const uint32_t dv[][3] = {
        {0x00000001, 0x00000000, 0x00000002}, {0xFFFFFFFE, 0xFFFFFFFF, 0xFFFFFFFF}, {0, 100, 7},
        {0xFFFFFFFF, 0xFFFFFFF9, 2},          {0, 7, 0xFFFFFFFE},                   {0xFFFFFFFF, 0x80000000, 1},
        {0xFFFFFFFF, 0x80000000, 0xFFFFFFFF}, {0, 5, 0},                            {0x00000002, 0, 2},
    };
    for (uint32_t i = 0; i < sizeof dv / sizeof dv[0]; i++) {
        uint32_t hi = dv[i][0], lo = dv[i][1], d = dv[i][2], q = 0, r = 0, c0 = de_count;
        DIV("divl", hi, lo, d, q, r);
        div_line("div", hi, lo, d, c0, q, r);
        c0 = de_count;
        DIV("idivl", hi, lo, d, q, r);
        div_line("idiv", hi, lo, d, c0, q, r);
    }
    static const uint32_t bv[][2] = {{0x00FF, 0x10}, {0x1000, 0x10}, {0xFF80, 0xFF}, {0xFFF9, 0x02}, {0x0064, 0x00}};
    for (uint32_t i = 0; i < sizeof bv / sizeof bv[0]; i++) {
        uint32_t ax = bv[i][0], d = bv[i][1], q = 0, c0 = de_count;
        DIVB("divb", ax, d, q);
        div_line("divb", 0, ax, d, c0, q & 0xFFFF, 0);
        c0 = de_count;
        DIVB("idivb", ax, d, q);
        div_line("idivb", 0, ax, d, c0, q & 0xFFFF, 0);
    }
}

static NOINLINE void test_shift(void)
{
    static const uint32_t counts[] = {0, 1, 7, 31};
    const uint32_t v = 0x81234567;
    for (int fi = 0; fi < 2; fi++) {
        uint32_t fin = fi ? F1 : F0;
        for (int i = 0; i < 4; i++) {
            uint32_t c = counts[i];
            /* Count 0 leaves all flags alone; OF is defined only for 1;
             * AF is undefined for shifts; rotates leave SF ZF AF PF alone. */
            uint32_t shm = c == 0 ? ARITH : c == 1 ? (CF | OF | SZP) : (CF | SZP);
            uint32_t rom = c == 0 ? ARITH : c == 1 ? ARITH : (ARITH & ~OF);
            BIN("shl", "shll %b[c], %[d]", v, c, fin, shm);
            BIN("shr", "shrl %b[c], %[d]", v, c, fin, shm);
            BIN("sar", "sarl %b[c], %[d]", v, c, fin, shm);
            BIN("rol", "roll %b[c], %[d]", v, c, fin, rom);
            BIN("ror", "rorl %b[c], %[d]", v, c, fin, rom);
            BIN("rcl", "rcll %b[c], %[d]", v, c, fin, rom);
            BIN("rcr", "rcrl %b[c], %[d]", v, c, fin, rom);
            uint32_t d = 0x81234567, f;
            __asm__ volatile("pushl %[fi]; popfl; shldl %%cl, %[s], %[d]; pushfl; popl %[fo]"
                             : [d] "+r"(d), [fo] "=&r"(f)
                             : [s] "r"(0xF0F0F00Fu), "c"(c), [fi] "r"(fin)
                             : "cc");
            line("shld", v, c, fin, d, f, shm);
            d = 0x81234567;
            __asm__ volatile("pushl %[fi]; popfl; shrdl %%cl, %[s], %[d]; pushfl; popl %[fo]"
                             : [d] "+r"(d), [fo] "=&r"(f)
                             : [s] "r"(0xF0F0F00Fu), "c"(c), [fi] "r"(fin)
                             : "cc");
            line("shrd", v, c, fin, d, f, shm);
        }
        /* Immediate-count and by-one encodings. */
        BIN("shl1", "shll $1, %[d]", 0x40000000u, 1, fin, CF | OF | SZP);
        BIN("sar1", "sarl $1, %[d]", 0x80000001u, 1, fin, CF | OF | SZP);
        BIN("shr1", "shrl $1, %[d]", 0x80000001u, 1, fin, CF | OF | SZP);
        BIN("rol1", "roll $1, %[d]", 0x40000000u, 1, fin, ARITH);
        BIN("rcr1", "rcrl $1, %[d]", 0x00000001u, 1, fin, ARITH);
        BIN("shlb4", "shlb $4, %b[d]", 0x0000001Fu, 4, fin, CF | SZP);
        BIN("sarw3", "sarw $3, %w[d]", 0x00008008u, 3, fin, CF | SZP);
    }
}

static NOINLINE void test_bits(void)
{
    static const uint32_t idx[] = {0, 5, 31, 36};
    for (int i = 0; i < 4; i++) {
        uint32_t b = idx[i];
        /* BT*: CF is the old bit, ZF unaffected, OF SF AF PF undefined. */
        BIN("bt", "btl %[c], %[d]", 0x80000021u, b, F0, CF | ZF);
        BIN("bts", "btsl %[c], %[d]", 0x80000021u, b, F1, CF | ZF);
        BIN("btr", "btrl %[c], %[d]", 0x80000021u, b, F0, CF | ZF);
        BIN("btc", "btcl %[c], %[d]", 0x80000021u, b, F1, CF | ZF);
    }
    /* Memory bit strings: the register offset is signed and unbounded. */
    static volatile uint32_t arr[4];
    static const int32_t moff[] = {3, 35, -1, 64, -32};
    for (int i = 0; i < 5; i++) {
        arr[0] = 0x80000001;
        arr[1] = 0x00000008;
        arr[2] = 0x00000100;
        arr[3] = 0xFFFFFFFF;
        uint32_t f1, f2;
        __asm__ volatile("pushl %[fi]; popfl; btl %[o], %[m]; pushfl; popl %[f1]\n\t"
                         "pushl %[fi]; popfl; btcl %[o], %[m]; pushfl; popl %[f2]"
                         : [f1] "=&r"(f1), [f2] "=&r"(f2), [m] "+m"(arr[1])
                         : [o] "r"(moff[i]), [fi] "r"(F0)
                         : "cc", "memory");
        printf("bt/btc mem offset %d: cf %x then %x, words %08x %08x %08x %08x\n", moff[i], f1 & CF, f2 & CF, arr[0],
               arr[1], arr[2], arr[3]);
    }
    static const uint32_t sv[] = {0x00010000, 0x80000001, 1, 0xFFFFFFFF, 0x00F00000, 0};
    for (int i = 0; i < 6; i++) {
        uint32_t s = sv[i], r1 = 0xDEADBEEF, r2 = 0xDEADBEEF, f1, f2;
        __asm__ volatile("pushl %[fi]; popfl; bsfl %[s], %[r]; pushfl; popl %[f]"
                         : [r] "+r"(r1), [f] "=&r"(f1)
                         : [s] "r"(s), [fi] "r"(F0)
                         : "cc");
        __asm__ volatile("pushl %[fi]; popfl; bsrl %[s], %[r]; pushfl; popl %[f]"
                         : [r] "+r"(r2), [f] "=&r"(f2)
                         : [s] "r"(s), [fi] "r"(F0)
                         : "cc");
        /* With a zero source the destination is undefined: print ZF only. */
        if (s)
            printf("bsf/bsr %08x: %u %u zf %x %x\n", s, r1, r2, f1 & ZF, f2 & ZF);
        else
            printf("bsf/bsr %08x: zf %x %x\n", s, f1 & ZF, f2 & ZF);
    }
    uint32_t x = 0x12345678;
    __asm__ volatile("bswap %0" : "+r"(x));
    printf("bswap 12345678: %08x\n", x);
}

static NOINLINE void test_atomic(void)
{
    static volatile uint32_t m;
    static const uint32_t xv[][2] = {{0x7FFFFFFF, 1}, {0xFFFFFFFF, 1}, {5, 7}};
    for (int i = 0; i < 3; i++) {
        uint32_t r = xv[i][1], f;
        m = xv[i][0];
        __asm__ volatile("pushl %[fi]; popfl; xaddl %[r], %[m]; pushfl; popl %[f]"
                         : [r] "+r"(r), [m] "+m"(m), [f] "=&r"(f)
                         : [fi] "r"(F0)
                         : "cc", "memory");
        printf("xadd %08x,%08x: mem %08x reg %08x fl=%03x\n", xv[i][0], xv[i][1], m, r, f & ARITH);
    }
    static const uint32_t cv[][2] = {{5, 5}, {5, 6}, {0x80000000, 1}};
    for (int i = 0; i < 3; i++) {
        uint32_t a = cv[i][1], f;
        m = cv[i][0];
        __asm__ volatile("pushl %[fi]; popfl; cmpxchgl %[n], %[m]; pushfl; popl %[f]"
                         : "+a"(a), [m] "+m"(m), [f] "=&r"(f)
                         : [n] "r"(0x99u), [fi] "r"(F0)
                         : "cc", "memory");
        printf("cmpxchg mem %08x eax %08x: mem %08x eax %08x fl=%03x\n", cv[i][0], cv[i][1], m, a, f & ARITH);
    }
    static volatile uint64_t q;
    for (int i = 0; i < 2; i++) {
        q = 0x1111111122222222ull;
        uint32_t lo = i ? 0x22222222 : 0x22222223, hi = 0x11111111, f;
        uint32_t fin = i ? (F1 & ~ZF) : F1; /* ZF changes; the rest must stay set */
        __asm__ volatile("pushl %[fi]; popfl; cmpxchg8b %[m]; pushfl; popl %[f]"
                         : "+a"(lo), "+d"(hi), [m] "+m"(q), [f] "=&r"(f)
                         : "b"(0x44444444u), "c"(0x33333333u), [fi] "r"(fin)
                         : "cc", "memory");
        printf("cmpxchg8b %s: edx:eax %08x%08x mem %08x%08x fl=%03x\n", i ? "equal" : "differ", hi, lo,
               (uint32_t)(q >> 32), (uint32_t)q, f & ARITH);
    }
}

#define SETCC(cc, bit)                                                                                          \
    __asm__ volatile("cmpl %[b], %[a]\n\tset" cc " %[t]" : [t] "=q"(t) : [a] "r"(a), [b] "r"(b) : "cc");        \
    sm |= (uint32_t)t << (bit);                                                                                 \
    r = 0;                                                                                                      \
    __asm__ volatile("cmpl %[b], %[a]\n\tcmov" cc " %[one], %[r]"                                               \
                     : [r] "+r"(r)                                                                              \
                     : [a] "r"(a), [b] "r"(b), [one] "r"(1u)                                                    \
                     : "cc");                                                                                   \
    cm |= r << (bit)

static NOINLINE void test_cc(void)
{
    static const uint32_t cp[][2] = {{1, 2}, {2, 1}, {5, 5}, {0x80000000, 1}, {0x7FFFFFFF, 0xFFFFFFFF}, {0, 0x80000000}, {3, 0}};
    for (uint32_t i = 0; i < sizeof cp / sizeof cp[0]; i++) {
        uint32_t a = cp[i][0], b = cp[i][1], sm = 0, cm = 0, r;
        uint8_t t;
        /* Bit n is condition code n: o no b ae e ne be a s ns p np l ge le g. */
        SETCC("o", 0);
        SETCC("no", 1);
        SETCC("b", 2);
        SETCC("ae", 3);
        SETCC("e", 4);
        SETCC("ne", 5);
        SETCC("be", 6);
        SETCC("a", 7);
        SETCC("s", 8);
        SETCC("ns", 9);
        SETCC("p", 10);
        SETCC("np", 11);
        SETCC("l", 12);
        SETCC("ge", 13);
        SETCC("le", 14);
        SETCC("g", 15);
        printf("cmp %08x,%08x: setcc %04x cmovcc %04x\n", a, b, sm, cm);
    }
}

static NOINLINE void test_bcd(void)
{
    static const uint8_t dv[] = {0x00, 0x09, 0x0A, 0x19, 0x3F, 0x99, 0x9A, 0xA5, 0xFF};
    for (int fi = 0; fi < 2; fi++) {
        uint32_t fin = fi ? (F0 | CF | AF) : F0;
        for (uint32_t i = 0; i < sizeof dv; i++) {
            uint32_t a = 0x1200 | dv[i], f;
            __asm__ volatile("pushl %[fi]; popfl; daa; pushfl; popl %[f]"
                             : "+a"(a), [f] "=&r"(f)
                             : [fi] "r"(fin)
                             : "cc");
            printf("daa al=%02x fl=%03x: ax %04x fl=%03x\n", dv[i], fin & ARITH, a & 0xFFFF, f & (CF | AF | SZP));
            a = 0x1200 | dv[i];
            __asm__ volatile("pushl %[fi]; popfl; das; pushfl; popl %[f]"
                             : "+a"(a), [f] "=&r"(f)
                             : [fi] "r"(fin)
                             : "cc");
            printf("das al=%02x fl=%03x: ax %04x fl=%03x\n", dv[i], fin & ARITH, a & 0xFFFF, f & (CF | AF | SZP));
        }
    }
    /* AL values avoid the AX+0x106 / AX-6 carry into AH corner, where
     * implementations differ from the SDM pseudocode. */
    static const uint8_t av[] = {0x06, 0x09, 0x0A, 0x0F, 0x10, 0x39, 0x7B, 0xF0};
    for (int fi = 0; fi < 2; fi++) {
        uint32_t fin = fi ? (F0 | AF) : F0;
        for (uint32_t i = 0; i < sizeof av; i++) {
            uint32_t a = 0x1200 | av[i], f;
            __asm__ volatile("pushl %[fi]; popfl; aaa; pushfl; popl %[f]"
                             : "+a"(a), [f] "=&r"(f)
                             : [fi] "r"(fin)
                             : "cc");
            printf("aaa al=%02x fl=%03x: ax %04x fl=%03x\n", av[i], fin & ARITH, a & 0xFFFF, f & (CF | AF));
            a = 0x1200 | av[i];
            __asm__ volatile("pushl %[fi]; popfl; aas; pushfl; popl %[f]"
                             : "+a"(a), [f] "=&r"(f)
                             : [fi] "r"(fin)
                             : "cc");
            printf("aas al=%02x fl=%03x: ax %04x fl=%03x\n", av[i], fin & ARITH, a & 0xFFFF, f & (CF | AF));
        }
    }
    static const uint16_t mv[] = {0x0000, 0x0009, 0x000A, 0x0063, 0x00FF, 0x0109, 0x0909, 0xFF09};
    for (uint32_t i = 0; i < sizeof mv / sizeof mv[0]; i++) {
        uint32_t a = mv[i], b = mv[i], c = mv[i], d = mv[i], f1, f2, f3, f4;
        /* D4/D5 with an explicit base byte: 10 is the usual form, 16 the
         * undocumented-by-mnemonic one. */
        __asm__ volatile("pushl %[fi]; popfl; .byte 0xD4, 0x0A; pushfl; popl %[f]" : "+a"(a), [f] "=&r"(f1) : [fi] "r"(F1) : "cc");
        __asm__ volatile("pushl %[fi]; popfl; .byte 0xD4, 0x10; pushfl; popl %[f]" : "+a"(b), [f] "=&r"(f2) : [fi] "r"(F1) : "cc");
        __asm__ volatile("pushl %[fi]; popfl; .byte 0xD5, 0x0A; pushfl; popl %[f]" : "+a"(c), [f] "=&r"(f3) : [fi] "r"(F1) : "cc");
        __asm__ volatile("pushl %[fi]; popfl; .byte 0xD5, 0x10; pushfl; popl %[f]" : "+a"(d), [f] "=&r"(f4) : [fi] "r"(F1) : "cc");
        printf("aam/aad ax=%04x: aam10 %04x fl=%03x aam16 %04x fl=%03x aad10 %04x fl=%03x aad16 %04x fl=%03x\n", mv[i],
               a & 0xFFFF, f1 & SZP, b & 0xFFFF, f2 & SZP, c & 0xFFFF, f3 & SZP, d & 0xFFFF, f4 & SZP);
    }
}

static uint8_t sbuf[64], dbuf[64];

static uint32_t hash(const uint8_t *p, uint32_t n)
{
    uint32_t h = 0;
    for (uint32_t i = 0; i < n; i++)
        h = h * 31 + p[i];
    return h;
}

static void str_line(const char *name, uint32_t ecx, const void *s0, const void *s1, const void *d0, const void *d1,
                     uint32_t extra)
{
    printf("%s: ecx %08x esi %d edi %d eax/fl %08x dst-hash %08x\n", name, ecx, (int32_t)((uint32_t)s1 - (uint32_t)s0),
           (int32_t)((uint32_t)d1 - (uint32_t)d0), extra, hash(dbuf, sizeof dbuf));
}

static NOINLINE void test_string(void)
{
    for (int i = 0; i < 64; i++) {
        sbuf[i] = (uint8_t)(i * 7 + 1);
        dbuf[i] = 0;
    }
    uint8_t *s = sbuf + 3, *d = dbuf + 5;
    uint32_t c = 13, a = 0, f;
    __asm__ volatile("cld; rep movsb" : "+S"(s), "+D"(d), "+c"(c) : : "memory");
    str_line("rep movsb df=0", c, sbuf + 3, s, dbuf + 5, d, 0);

    s = sbuf + 32;
    d = dbuf + 40;
    c = 4;
    __asm__ volatile("std; rep movsl; cld" : "+S"(s), "+D"(d), "+c"(c) : : "memory");
    str_line("rep movsl df=1", c, sbuf + 32, s, dbuf + 40, d, 0);

    d = dbuf + 1;
    c = 5;
    a = 0xABCD;
    __asm__ volatile("cld; rep stosw" : "+D"(d), "+c"(c) : "a"(a) : "memory");
    str_line("rep stosw df=0", c, 0, 0, dbuf + 1, d, 0);

    d = dbuf + 63;
    c = 3;
    __asm__ volatile("std; rep stosb; cld" : "+D"(d), "+c"(c) : "a"(0x77) : "memory");
    str_line("rep stosb df=1", c, 0, 0, dbuf + 63, d, 0);

    s = sbuf + 10;
    a = 0xFFFFFFFF;
    __asm__ volatile("cld; lodsb; lodsl" : "+S"(s), "+a"(a) : : "memory");
    str_line("lodsb;lodsl", 0, sbuf + 10, s, 0, 0, a);

    s = sbuf;
    d = dbuf;
    c = 0;
    __asm__ volatile("cld; rep movsb" : "+S"(s), "+D"(d), "+c"(c) : : "memory");
    str_line("rep movsb ecx=0", c, sbuf, s, dbuf, d, 0);

    static const char h1[] = "HELLO WORLD", h2[] = "HELLO THERE";
    const char *p = h1, *q = h2;
    c = 11;
    __asm__ volatile("pushl %[fi]; popfl; repe cmpsb; pushfl; popl %[f]"
                     : "+S"(p), "+D"(q), "+c"(c), [f] "=&r"(f)
                     : [fi] "r"(F0)
                     : "cc", "memory");
    str_line("repe cmpsb", c, h1, p, h2, q, f & ARITH);

    p = h1;
    q = h1;
    c = 11;
    __asm__ volatile("pushl %[fi]; popfl; repe cmpsb; pushfl; popl %[f]"
                     : "+S"(p), "+D"(q), "+c"(c), [f] "=&r"(f)
                     : [fi] "r"(F0)
                     : "cc", "memory");
    str_line("repe cmpsb equal", c, h1, p, h1, q, f & ARITH);

    q = h1;
    c = 11;
    __asm__ volatile("pushl %[fi]; popfl; repne scasb; pushfl; popl %[f]"
                     : "+D"(q), "+c"(c), [f] "=&r"(f)
                     : "a"('O'), [fi] "r"(F0)
                     : "cc", "memory");
    str_line("repne scasb 'O'", c, 0, 0, h1, q, f & ARITH);

    q = h1;
    c = 11;
    __asm__ volatile("pushl %[fi]; popfl; repne scasb; pushfl; popl %[f]"
                     : "+D"(q), "+c"(c), [f] "=&r"(f)
                     : "a"('z'), [fi] "r"(F0)
                     : "cc", "memory");
    str_line("repne scasb 'z'", c, 0, 0, h1, q, f & ARITH);

    q = h1 + 10;
    c = 11;
    __asm__ volatile("pushl %[fi]; popfl; std; repne scasb; cld; pushfl; popl %[f]"
                     : "+D"(q), "+c"(c), [f] "=&r"(f)
                     : "a"('L'), [fi] "r"(F0)
                     : "cc", "memory");
    str_line("std repne scasb 'L'", c, 0, 0, h1 + 10, q, f & ARITH);
}

#define LEA(desc, expr, ...)                                                                                    \
    do {                                                                                                        \
        uint32_t _r = 0x5A5A5A5A;                                                                               \
        __asm__ volatile(expr : [r] "+r"(_r) : __VA_ARGS__);                                                    \
        printf("lea %s: %08x\n", desc, _r);                                                                     \
    } while (0)

static NOINLINE void test_lea(void)
{
    LEA("0x10(eax=1000,ebx=20,4)", "leal 0x10(%[a],%[b],4), %[r]", [a] "r"(0x1000u), [b] "r"(0x20u));
    LEA("(,ecx=3,8)", "leal (,%[c],8), %[r]", [c] "r"(3u));
    LEA("-1(eax=1000)", "leal -1(%[a]), %[r]", [a] "r"(0x1000u));
    LEA("(edx=fffffff0,ebx=20)", "leal (%[d],%[b]), %[r]", [d] "r"(0xFFFFFFF0u), [b] "r"(0x20u));
    LEA("0x7fffffff(esi=80000000,esi,1)", "leal 0x7FFFFFFF(%[s],%[s]), %[r]", [s] "r"(0x80000000u));
    LEA("0x12345678", "leal 0x12345678, %[r]", "i"(0));
    LEA("-8(eax=1000,ecx=-1,2)", "leal -8(%[a],%[c],2), %[r]", [a] "r"(0x1000u), [c] "r"(0xFFFFFFFFu));
    LEA("16-bit dest 0x10(eax=1234fff0,ebx=20,2)", "leaw 0x10(%[a],%[b],2), %w[r]", [a] "r"(0x1234FFF0u),
        [b] "r"(0x20u));
    /* 16-bit addressing (address-size prefix): wraps at 64 KiB. */
    LEA("addr16 0x1234(bx=0020,si=ffff0010)", "leal 0x1234(%%bx,%%si), %[r]", "b"(0x20u), "S"(0xFFFF0010u));
    uint32_t r = 0x5A5A5A5A;
    __asm__ volatile("pushl %%ebp\n\tmovl $0xFFF0, %%ebp\n\tleal 0x20(%%bp,%%di), %%eax\n\tpopl %%ebp"
                     : "+a"(r)
                     : "D"(8u));
    printf("lea addr16 0x20(bp=fff0,di=0008): %08x\n", r);
    LEA("addr16 -2(bx=0001)", "leal -2(%%bx), %[r]", "b"(1u));
}

static NOINLINE void test_segs(void)
{
    uint32_t e0, e1, v;
    __asm__ volatile("movl %%esp, %[e0]; pushl %%ds; movl %%esp, %[e1]; popl %[v]"
                     : [e0] "=&r"(e0), [e1] "=&r"(e1), [v] "=&r"(v)
                     :
                     : "memory");
    /* The upper 16 bits of a pushed segment register differ between CPUs. */
    printf("push ds: esp -%u, value %04x\n", e0 - e1, v & 0xFFFF);
    __asm__ volatile("movl %%esp, %[e0]; pushl %%cs; movl %%esp, %[e1]; popl %[v]"
                     : [e0] "=&r"(e0), [e1] "=&r"(e1), [v] "=&r"(v)
                     :
                     : "memory");
    printf("push cs: esp -%u, value %04x\n", e0 - e1, v & 0xFFFF);
    __asm__ volatile("movl %%esp, %[e0]; pushw %%ss; movl %%esp, %[e1]; popw %w[v]"
                     : [e0] "=&r"(e0), [e1] "=&r"(e1), [v] "=&q"(v)
                     :
                     : "memory");
    printf("pushw ss: esp -%u, value %04x\n", e0 - e1, v & 0xFFFF);
    __asm__ volatile("movl %%esp, %[e0]; pushl $0x23; popl %%es; movl %%esp, %[e1]; movl %%es, %[v]; "
                     "pushl $0x10; popl %%es"
                     : [e0] "=&r"(e0), [e1] "=&r"(e1), [v] "=&r"(v)
                     :
                     : "memory");
    printf("pushl $0x23; popl es: esp change %d, es %04x\n", (int32_t)(e1 - e0), v & 0xFFFF);
    __asm__ volatile("movl %%esp, %[e0]; pushw $0x23; popw %%fs; movl %%esp, %[e1]; movl %%fs, %[v]; "
                     "pushl $0x10; popl %%fs"
                     : [e0] "=&r"(e0), [e1] "=&r"(e1), [v] "=&r"(v)
                     :
                     : "memory");
    printf("pushw $0x23; popw fs: esp change %d, fs %04x\n", (int32_t)(e1 - e0), v & 0xFFFF);

    /* popf at CPL 0: status flags, DF and IOPL are writable; bits 3, 5, 15
     * read as 0 and bit 1 as 1; TF, IF and NT are left clear on purpose. */
    uint32_t f;
    __asm__ volatile("pushfl; pushl %[v]; popfl; pushfl; popl %[f]; popfl" : [f] "=&r"(f) : [v] "r"(0x0003BCFFu) : "cc", "memory");
    printf("popf 0003bcff -> pushf %08x\n", f & 0x0003FFFF);
    __asm__ volatile("pushfl; pushl %[v]; popfl; pushfl; popl %[f]; popfl" : [f] "=&r"(f) : [v] "r"(0u) : "cc", "memory");
    printf("popf 00000000 -> pushf %08x\n", f & 0x0003FFFF);
    __asm__ volatile("pushfl; pushl %[v]; popfl; pushfw; popw %w[f]; popfl" : [f] "=&q"(f) : [v] "r"(0x000008D5u) : "cc", "memory");
    printf("popf 000008d5 -> pushfw %04x\n", f & 0xFFFF);
    uint32_t ah;
    __asm__ volatile("pushl %[v]; popfl; lahf; movzbl %%ah, %[r]; pushl $2; popfl" : [r] "=r"(ah) : [v] "r"(0x8D7u), "a"(0) : "cc");
    printf("lahf with flags 8d7: ah %02x\n", ah);
    __asm__ volatile("pushl $2; popfl; movb $0xFF, %%ah; sahf; pushfl; popl %[f]; pushl $2; popfl" : [f] "=r"(f) : : "eax", "cc");
    printf("sahf ff: flags %03x\n", f & 0xFFF);
}

int kmain(uint32_t magic, struct multiboot_info *mbi)
{
    (void)magic;
    (void)mbi;
    idt_set_handler(0, de_handler);
    puts("cpu self-test\n");
    test_alu();
    test_cdq();
    test_mul();
    test_div();
    test_shift();
    test_bits();
    test_atomic();
    test_cc();
    test_bcd();
    test_string();
    test_lea();
    test_segs();
    printf("#DE count: %u\n", de_count);
    puts("cpu self-test done\n");
    return EXIT_OK;
}
