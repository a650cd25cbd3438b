/*
 * triplefault: checks shutdown on a triple fault.  Loads an IDT with limit
 * 0 and executes int3: vector 3 is outside the IDT (#GP), so is #GP's
 * vector 13 (double fault) and so is #DF's vector 8, so the CPU shuts
 * down.  Under QEMU with -no-reboot that ends the VM; ringback should
 * report a triple fault.  Reaching the code after int3 is a failure.
 */
#include "common/rt.h"

int kmain(uint32_t magic, struct multiboot_info *mbi)
{
    (void)magic;
    (void)mbi;
    puts("triplefault test: loading an empty IDT and executing int3\n");
    struct {
        uint16_t limit;
        uint32_t base;
    } __attribute__((packed)) idtr = {0, 0};
    __asm__ volatile("lidt %0\n\t"
                     "int3"
                     :
                     : "m"(idtr)
                     : "memory");
    puts("FAIL still running after int3 with an empty IDT\n");
    return EXIT_FAIL;
}
