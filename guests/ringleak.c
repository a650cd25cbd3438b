/*
 * ringleak: what guest ring-0 code sees of ring compression.  With IOPL 3
 * and IF on, it reads EFLAGS with PUSHF, its code selector with MOV r/m,CS
 * and the GDT base with SGDT - none of which fault at ring 1 - and prints
 * them.  On a CPU, on ringback's reference engine and on the raw engine
 * with its code scanner, it sees IOPL 3, CS 0x08 and its own GDT.  Run raw
 * without the scanner (--no-scan) the ring-1 values leak: IOPL 0, CS 0x09
 * and the monitor's GDT at 0xffc00000.
 */
#include "common/rt.h"

struct gdtr {
    uint16_t limit;
    uint32_t base;
} __attribute__((packed));

int kmain(uint32_t magic, struct multiboot_info *mbi)
{
    (void)magic;
    (void)mbi;
    pic_remap(0xFF, 0xFF);
    uint32_t fl;
    __asm__ volatile("pushfl; popl %0" : "=r"(fl));
    __asm__ volatile("pushl %0; popfl" : : "r"(fl | 0x3000) : "cc"); /* IOPL 3 */
    sti();
    uint32_t flags, cs;
    struct gdtr gdtr;
    __asm__ volatile("pushfl\n\t"
                     "popl %0\n\t"
                     "movl %%cs, %1\n\t"
                     "sgdt %2"
                     : "=r"(flags), "=r"(cs), "=m"(gdtr));
    cli();
    printf("ring 0 sees: IOPL %u, IF %u, CS %04x, GDT base %08x\n", (flags >> 12) & 3, (flags >> 9) & 1,
           cs & 0xFFFF, gdtr.base);
    return EXIT_OK;
}
