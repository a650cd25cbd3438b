/*
 * hello: checks multiboot v1 booting.  Prints a greeting, the magic in
 * eax, the info flags, the command line, mem_lower/mem_upper, every
 * memory map entry and, for each module, its size, command line and
 * first 16 bytes.  Only loader-independent facts are printed (no info
 * structure or module addresses, no boot loader name) so the output can be
 * diffed between QEMU and ringback.
 */
#include "common/rt.h"

int kmain(uint32_t magic, struct multiboot_info *mbi)
{
    puts("hello from ringback guest\n");
    printf("magic: %08x\n", magic);
    if (magic != 0x2BADB002) {
        puts("FAIL bad multiboot magic\n");
        return EXIT_FAIL;
    }
    printf("flags: %08x\n", mbi->flags);
    if (mbi->flags & (1 << 2))
        printf("cmdline: '%s'\n", (const char *)mbi->cmdline);
    if (mbi->flags & (1 << 0))
        printf("mem_lower: %u KiB, mem_upper: %u KiB\n", mbi->mem_lower, mbi->mem_upper);
    if (mbi->flags & (1 << 6)) {
        uint32_t off = 0;
        int i = 0;
        while (off < mbi->mmap_length) {
            struct multiboot_mmap *e = (struct multiboot_mmap *)(mbi->mmap_addr + off);
            printf("mmap[%d]: base %08x%08x len %08x%08x type %u\n", i, e->base_hi, e->base_lo, e->len_hi, e->len_lo,
                   e->type);
            off += e->size + 4; /* size excludes its own field */
            i++;
        }
    }
    if (mbi->flags & (1 << 3)) {
        printf("modules: %u\n", mbi->mods_count);
        struct multiboot_module *m = (struct multiboot_module *)mbi->mods_addr;
        for (uint32_t i = 0; i < mbi->mods_count; i++) {
            uint32_t size = m[i].mod_end - m[i].mod_start;
            printf("module[%u]: size %u, page aligned: %s, cmdline '%s'\n", i, size,
                   (m[i].mod_start & 0xFFF) ? "no" : "yes", m[i].string ? (const char *)m[i].string : "");
            puts("  first bytes: '");
            const uint8_t *p = (const uint8_t *)m[i].mod_start;
            for (uint32_t j = 0; j < 16 && j < size; j++)
                putc(p[j] >= 0x20 && p[j] < 0x7F ? (char)p[j] : '.');
            puts("'\n");
        }
    }
    puts("hello done\n");
    return EXIT_OK;
}
