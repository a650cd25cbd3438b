//! The host slot fill of a TLB miss as host code: the page walk that the
//! inline memory path needs most (docs/raw-engine.md, "Host slots"),
//! implementing SDM Vol. 3A 4.3 ("32-bit paging"), 4.6 ("Access rights")
//! and 4.10.2 (the TLB fill) for the case that writes nothing but the TLB.
//!
//! It is [`Env::fill`](super::Env::fill) once the compiler has run: the
//! same arguments and result as [`MemEnv::fill_host_slot`], which it
//! computes exactly where the walk finds, with paging on and the TLB slot
//! empty, a present and accessed page directory entry for a 4 KiB page
//! and a present, accessed page table entry (dirty too for a store), both
//! in plain RAM, allowing the access as it stands, to a plain RAM page
//! (for a store, one already dirty and holding no watched code). Every
//! other case (a fault, an accessed or dirty bit to set, a 4 MiB page, a
//! slot to evict, a device, watched code to store to) jumps, arguments
//! untouched, to the general fill in Rust. A paging loop spent more than
//! a third of its time in that general fill, at about 25 ns a miss.

use std::mem::offset_of;

use dynasmrt::x64::X64Relocation;
use dynasmrt::{dynasm, DynasmApi, DynasmLabelApi, VecAssembler};

use super::emit::{
    ENV_PLATFORM as PLATFORM, HOST_ADDEND, HOST_CAREFUL_TAG, HOST_READ_TAG, HOST_SLOT_SHIFT, HOST_WRITE_TAG, MEM,
    M_HOST as HOST, M_PAGING as PAGING, M_RAM as RAM, M_READ_PERMISSIONS as READ_PERMISSIONS, M_TLB as TLB, STATE,
    TLB_PERMISSIONS as PERMISSIONS, TLB_PHYS as PHYS_PAGE, TLB_SLOTS as SLOTS, TLB_TAG as TAG,
};
use super::{FillFn, MemEnv};
use crate::cpu::mmu::{tlb_layout, HostSlot, PDE_PS, PTE_A, PTE_D, PTE_G, PTE_P, PTE_RW};
use crate::cpu::state::{cr4, offsets};
use crate::cpu::Cpu;
use crate::platform::Platform;

const CR3: i32 = (STATE + offsets::CR3) as i32;
const CR4: i32 = (STATE + offsets::CR4) as i32;
const FILLS: i32 = (offset_of!(Cpu, tlb) + tlb_layout::FILLS) as i32;
const USED: i32 = (offset_of!(Cpu, tlb) + tlb_layout::USED) as i32;
const A20_MASK: i32 = Platform::A20_MASK as i32;
const WRITE_PERMISSIONS: i32 = (MEM + offset_of!(MemEnv, write_permissions)) as i32;
const PLAIN_END: i32 = (MEM + offset_of!(MemEnv, plain_end)) as i32;
const ROM_START: i32 = (MEM + offset_of!(MemEnv, rom_start)) as i32;
const ROM_END: i32 = (MEM + offset_of!(MemEnv, rom_end)) as i32;
const DIRTY_PAGES: i32 = (MEM + offset_of!(MemEnv, dirty_pages)) as i32;
const WATCHED_PAGES: i32 = (MEM + offset_of!(MemEnv, watched_pages)) as i32;
const ENTRY_SHIFT: i8 = 4;
const _: () = assert!(tlb_layout::ENTRY_SIZE == 1 << ENTRY_SHIFT);
const LARGE: i32 = tlb_layout::LARGE as i32;
const HOST_PAD: i32 = tlb_layout::HOST_PAD as i32;
const HOST_PAD2: i32 = tlb_layout::HOST_PAD2 as i32;
const NONE_TAG: i32 = HostSlot::NONE_TAG as i32;
const P: i32 = PTE_P as i32;
const RW: i32 = PTE_RW as i32;
const A: i32 = PTE_A as i32;
const D: i32 = PTE_D as i32;
const PS: i32 = PDE_PS as i32;
const G: i32 = PTE_G as i32;

/// Reads the table entry at the physical address in EAX into EAX, as the
/// bus would (through the A20 gate, in EBX), where it lies in plain RAM;
/// else to the general fill. Clobbers R9.
fn read_entry(ops: &mut VecAssembler<X64Relocation>) {
    dynasm!(ops
        ; .arch x64
        ; and eax, ebx
        ; lea r9, [rax + 4]
        ; cmp r9, QWORD [rsi + PLAIN_END]
        ; ja ->general
        ; add rax, QWORD [rsi + RAM]
        ; mov eax, DWORD [rax]
    );
}

/// The fill's code, assembled to run at `base`, going to `general` for
/// every case it does not take itself. The ABI of [`FillFn`]: RDI the
/// CPU, RSI the environment, EDX the linear address, ECX the size, R8D
/// whether it writes; EAX says whether the slot was made.
pub fn assemble(base: usize, general: FillFn) -> Option<Vec<u8>> {
    let mut ops = VecAssembler::<X64Relocation>::new(base);
    dynasm!(ops
        ; .arch x64
        ; push rbx
        ; push r12
        ; push r13
        ; push r14
        // The access stays in its page, paging is on, the TLB slot is
        // empty (R10 its entry, R11 its index).
        ; mov eax, edx
        ; and eax, 0xFFF
        ; add eax, ecx
        ; cmp eax, 0x1000
        ; ja ->general
        ; cmp DWORD [rsi + PAGING], 0
        ; je ->general
        ; mov r11d, edx
        ; shr r11d, 12
        ; and r11d, SLOTS - 1
        ; mov r10, r11
        ; shl r10, ENTRY_SHIFT
        ; add r10, QWORD [rsi + TLB]
        ; cmp DWORD [r10 + TAG], 0
        ; jne ->general
        // EBX: the A20 gate as it stands, as the bus applies it.
        ; mov rax, QWORD [rsi + PLATFORM]
        ; mov ebx, DWORD [rax + A20_MASK]
        // R12D: the page directory entry, from plain RAM; present and
        // accessed, for a 4 KiB page.
        ; mov eax, DWORD [rdi + CR3]
        ; and eax, -0x1000
        ; mov r9d, edx
        ; shr r9d, 22
        ; lea eax, [rax + r9 * 4]
    );
    read_entry(&mut ops);
    dynasm!(ops
        ; .arch x64
        ; mov r12d, eax
        ; and eax, P | A | PS
        ; cmp eax, P | A
        ; jne ->general
        // EAX: the page table entry, the same way; present and accessed.
        ; mov eax, r12d
        ; and eax, -0x1000
        ; mov r9d, edx
        ; shr r9d, 10
        ; and r9d, 0xFFC
        ; or eax, r9d
    );
    read_entry(&mut ops);
    dynasm!(ops
        ; .arch x64
        ; mov r9d, eax
        ; and r9d, P | A
        ; cmp r9d, P | A
        ; jne ->general
        // R9D: the entry's permissions dword as the TLB keeps it (user,
        // writable, dirty, global: one byte each), from both levels.
        ; and r12d, eax
        ; mov r9d, r12d
        ; shr r9d, 2 // U/S, bit 2
        ; and r9d, 1
        ; test r12d, RW
        ; jz >read_only
        ; or r9d, tlb_layout::WRITABLE as i32
        ;read_only:
        ; test eax, D
        ; jz >clean
        ; or r9d, tlb_layout::DIRTY as i32
        ;clean:
        // The access as it stands needs no fault and no dirty bit set:
        // the entry holds every permission bit it needs.
        ; mov r12d, DWORD [rsi + READ_PERMISSIONS]
        ; test r8d, r8d
        ; jz >check
        ; mov r12d, DWORD [rsi + WRITE_PERMISSIONS]
        ;check:
        ; or r12d, r9d
        ; cmp r12d, r9d
        ; jne ->general
        ; test eax, G
        ; jz >local
        ; test DWORD [rdi + CR4], cr4::PGE as i32
        ; jz >local
        ; or r9d, tlb_layout::GLOBAL as i32
        ;local:
        // EAX: the physical page as the TLB keeps it; R12: as the bus
        // finds it, which must be plain RAM outside the ROM's shadow.
        ; and eax, -0x1000
        ; mov r12d, eax
        ; and r12d, ebx
        ; lea rbx, [r12 + 0x1000]
        ; cmp rbx, QWORD [rsi + PLAIN_END]
        ; ja ->general
        ; cmp rbx, QWORD [rsi + ROM_START]
        ; jbe >outside_rom
        ; cmp r12, QWORD [rsi + ROM_END]
        ; jb ->general
        ;outside_rom:
        // R13D: whether stores may take the slot straight. A store needs
        // a page already dirty without watched code (else the general
        // fill marks it or gives the careful tag); a load opens the page
        // to stores where a store would find all that and the entry
        // allowing it.
        ; mov ebx, r12d
        ; shr ebx, 12
        ; mov r13d, ebx
        ; shr r13d, 6
        ; mov r14, QWORD [rsi + WATCHED_PAGES]
        ; mov r14, QWORD [r14 + r13 * 8]
        ; bt r14, rbx
        ; jc >watched
        ; mov r14, QWORD [rsi + DIRTY_PAGES]
        ; mov r14, QWORD [r14 + r13 * 8]
        ; bt r14, rbx
        ; jc >dirty
        ;watched:
        ; test r8d, r8d
        ; jnz ->general
        ; xor r13d, r13d
        ; jmp >fill
        ;dirty:
        ; mov r13d, 1
        ; test r8d, r8d
        ; jnz >fill
        ; mov r14d, DWORD [rsi + WRITE_PERMISSIONS]
        ; or r14d, r9d
        ; cmp r14d, r9d
        ; je >fill
        ; xor r13d, r13d
        ;fill:
        // The TLB entry, as a walk's fill writes it, counted and marked
        // in use.
        ; mov r14d, edx
        ; shr r14d, 12
        ; add r14d, 1
        ; mov DWORD [r10 + TAG], r14d
        ; mov DWORD [r10 + PHYS_PAGE], eax
        ; mov DWORD [r10 + PERMISSIONS], r9d
        ; mov BYTE [r10 + LARGE], 0
        ; add QWORD [rdi + FILLS], 1
        ; mov r14d, r11d
        ; shr r14d, 6
        ; mov rbx, QWORD [rdi + r14 * 8 + USED]
        ; bts rbx, r11
        ; mov QWORD [rdi + r14 * 8 + USED], rbx
        // The host slot beside it: read, and written where R13 says.
        ; shl r11, HOST_SLOT_SHIFT
        ; add r11, QWORD [rsi + HOST]
        ; mov r14d, edx
        ; and r14d, -0x1000
        ; mov rbx, QWORD [rsi + RAM]
        ; add rbx, r12
        ; sub rbx, r14
        ; mov QWORD [r11 + HOST_ADDEND], rbx
        ; mov QWORD [r11 + HOST_PAD2], 0
        ; mov DWORD [r11 + HOST_READ_TAG], r14d
        ; mov DWORD [r11 + HOST_CAREFUL_TAG], NONE_TAG
        ; mov DWORD [r11 + HOST_PAD], 0
        ; mov ebx, NONE_TAG
        ; test r13d, r13d
        ; cmovnz ebx, r14d
        ; mov DWORD [r11 + HOST_WRITE_TAG], ebx
        ; mov eax, 1
        ; pop r14
        ; pop r13
        ; pop r12
        ; pop rbx
        ; ret
        ;->general:
        ; pop r14
        ; pop r13
        ; pop r12
        ; pop rbx
        ; mov rax, QWORD general as usize as i64
        ; jmp rax
    );
    ops.finalize().ok()
}

#[cfg(test)]
mod tests;
