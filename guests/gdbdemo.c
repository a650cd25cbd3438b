/*
 * gdbdemo: a small kernel to debug with gdb, forwards and backwards.
 * bump() adds to a global counter and keeps a history; main calls it 100
 * times with IF set (so the raw engine runs it) and prints the total.
 */
#include "common/rt.h"

volatile uint32_t counter;
volatile uint32_t history[16];

__attribute__((noinline)) void bump(uint32_t i)
{
    counter += i;
    history[i & 15] = counter;
}

int kmain(uint32_t magic, struct multiboot_info *mbi)
{
    (void)magic;
    (void)mbi;
    pic_remap(0xFF, 0xFF);
    sti();
    for (uint32_t i = 1; i <= 100; i++)
        bump(i);
    cli();
    printf("counter %u\n", counter);
    return EXIT_OK;
}
