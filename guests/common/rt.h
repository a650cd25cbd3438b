/*
 * Tiny runtime shared by the ringback test kernels: fixed-width types,
 * port I/O, control-register access, COM1 output with a small printf,
 * the isa-debug-exit helper, and GDT/TSS/IDT construction with C
 * interrupt handlers.  No libc and no system headers are used.
 */
#ifndef RT_H
#define RT_H

typedef unsigned char uint8_t;
typedef unsigned short uint16_t;
typedef unsigned int uint32_t;
typedef unsigned long long uint64_t;
typedef signed char int8_t;
typedef short int16_t;
typedef int int32_t;
typedef long long int64_t;
typedef unsigned int size_t;
typedef unsigned int uintptr_t;

#define NULL ((void *)0)

/* Exit codes written to port 0xF4; QEMU exits with (code << 1) | 1. */
#define EXIT_OK 0         /* every check passed */
#define EXIT_FAIL 1       /* a check failed */
#define EXIT_UNEXPECTED 2 /* an interrupt or exception nobody expected */

/* GDT selectors laid out by gdt_init(). */
#define SEL_KCODE 0x08
#define SEL_KDATA 0x10
#define SEL_UCODE 0x1B /* 0x18 | RPL 3 */
#define SEL_UDATA 0x23 /* 0x20 | RPL 3 */
#define SEL_TSS 0x28

struct multiboot_info {
    uint32_t flags;
    uint32_t mem_lower, mem_upper;
    uint32_t boot_device;
    uint32_t cmdline;
    uint32_t mods_count, mods_addr;
    uint32_t syms[4];
    uint32_t mmap_length, mmap_addr;
    uint32_t drives_length, drives_addr;
    uint32_t config_table;
    uint32_t boot_loader_name;
    uint32_t apm_table;
};

struct multiboot_module {
    uint32_t mod_start, mod_end, string, reserved;
};

/* One memory map entry; 'size' does not count itself. */
struct multiboot_mmap {
    uint32_t size;
    uint32_t base_lo, base_hi;
    uint32_t len_lo, len_hi;
    uint32_t type;
} __attribute__((packed));

/* Register frame built by isr.S: segment registers, pusha block, vector,
 * error code, then what the CPU pushed.  user_esp/user_ss are only valid
 * when the interrupted code ran at a lower privilege (cs & 3 != 0). */
struct regs {
    uint32_t gs, fs, es, ds;
    uint32_t edi, esi, ebp, esp_at_pusha, ebx, edx, ecx, eax;
    uint32_t vector, err;
    uint32_t eip, cs, eflags;
    uint32_t user_esp, user_ss;
};

typedef void (*isr_handler_t)(struct regs *r);

struct tss {
    uint32_t prev, esp0, ss0, esp1, ss1, esp2, ss2, cr3, eip, eflags;
    uint32_t eax, ecx, edx, ebx, esp, ebp, esi, edi;
    uint32_t es, cs, ss, ds, fs, gs, ldt;
    uint16_t trap, iomap_base;
};

extern struct tss kernel_tss;

static inline void outb(uint16_t port, uint8_t v) { __asm__ volatile("outb %0, %1" : : "a"(v), "Nd"(port)); }
static inline void outw(uint16_t port, uint16_t v) { __asm__ volatile("outw %0, %1" : : "a"(v), "Nd"(port)); }
static inline void outl(uint16_t port, uint32_t v) { __asm__ volatile("outl %0, %1" : : "a"(v), "Nd"(port)); }
static inline uint8_t inb(uint16_t port) { uint8_t v; __asm__ volatile("inb %1, %0" : "=a"(v) : "Nd"(port)); return v; }
static inline uint16_t inw(uint16_t port) { uint16_t v; __asm__ volatile("inw %1, %0" : "=a"(v) : "Nd"(port)); return v; }
static inline uint32_t inl(uint16_t port) { uint32_t v; __asm__ volatile("inl %1, %0" : "=a"(v) : "Nd"(port)); return v; }

static inline uint32_t read_cr0(void) { uint32_t v; __asm__ volatile("mov %%cr0, %0" : "=r"(v)); return v; }
static inline uint32_t read_cr2(void) { uint32_t v; __asm__ volatile("mov %%cr2, %0" : "=r"(v)); return v; }
static inline uint32_t read_cr3(void) { uint32_t v; __asm__ volatile("mov %%cr3, %0" : "=r"(v)); return v; }
static inline uint32_t read_cr4(void) { uint32_t v; __asm__ volatile("mov %%cr4, %0" : "=r"(v)); return v; }
static inline void write_cr0(uint32_t v) { __asm__ volatile("mov %0, %%cr0" : : "r"(v) : "memory"); }
static inline void write_cr3(uint32_t v) { __asm__ volatile("mov %0, %%cr3" : : "r"(v) : "memory"); }
static inline void write_cr4(uint32_t v) { __asm__ volatile("mov %0, %%cr4" : : "r"(v) : "memory"); }
static inline void invlpg(uint32_t addr) { __asm__ volatile("invlpg (%0)" : : "r"(addr) : "memory"); }
static inline void cli(void) { __asm__ volatile("cli" ::: "memory"); }
static inline void sti(void) { __asm__ volatile("sti" ::: "memory"); }
static inline void barrier(void) { __asm__ volatile("" ::: "memory"); }

/* rt.c */
void rt_init(void);
void serial_init(void);
void putc(char c);
void puts(const char *s); /* no newline appended */
void printf(const char *fmt, ...);
void exit_qemu(uint32_t code) __attribute__((noreturn));

void gdt_init(void);
void idt_init(void);
void idt_set_handler(int vector, isr_handler_t fn);
void idt_set_dpl(int vector, int dpl);
void tss_set_esp0(uint32_t esp0);
/* Remap the 8259A pair to vectors 0x20-0x2F and set both masks. */
void pic_remap(uint8_t master_mask, uint8_t slave_mask);

void *memset(void *d, int c, size_t n);
void *memcpy(void *d, const void *s, size_t n);
int memcmp(const void *a, const void *b, size_t n);
size_t strlen(const char *s);

/* isr.S */
/* Enter ring 3 at eip with stack esp and the given EFLAGS; returns the
 * value later passed to user_return() from a kernel handler. */
uint32_t user_run(uint32_t eip, uint32_t esp, uint32_t eflags);
void user_return(uint32_t value) __attribute__((noreturn));
extern char isr_stubs[]; /* 256 stubs, 16 bytes apart */

#endif
