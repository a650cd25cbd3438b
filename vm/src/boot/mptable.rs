//! The MP configuration table a PC BIOS leaves in memory (Intel
//! MultiProcessor Specification 1.4, chapter 4), so that a kernel finds
//! the I/O APIC and how the ISA interrupts reach it the way it would on a
//! PC: one processor, the ISA bus, the I/O APIC at 0xFEC00000 with IRQ n
//! on pin n and the timer (IRQ 0) on pin 2, as QEMU's firmware describes
//! its PC; the 8259's INTR on LINT0 (ExtINT) and NMI on LINT1.
//!
//! The floating pointer and the table sit in the BIOS area (0xF0000-
//! 0xFFFFF, reserved in the e820 map), where the specification says a
//! kernel searches.

use crate::devices::ioapic;
use crate::devices::lapic;
use crate::exec::system::{CPUID_1_EAX, CPUID_1_EDX, CPUID_1_EDX_APIC};
use crate::platform::Platform;

/// Where the floating pointer structure goes, the table right after it.
pub const FLOATING_POINTER: u32 = 0xF_A000;

const ENTRY_PROCESSOR: u8 = 0;
const ENTRY_BUS: u8 = 1;
const ENTRY_IOAPIC: u8 = 2;
const ENTRY_IO_INTERRUPT: u8 = 3;
const ENTRY_LOCAL_INTERRUPT: u8 = 4;
const INT_VECTORED: u8 = 0;
const INT_NMI: u8 = 1;
const INT_EXTINT: u8 = 3;
const ISA_BUS: u8 = 0;
/// The I/O APIC's ID, as its register reads.
const IOAPIC_ID: u8 = 0;

fn checksum(bytes: &[u8]) -> u8 {
    0u8.wrapping_sub(bytes.iter().fold(0u8, |s, b| s.wrapping_add(*b)))
}

/// The configuration table (header and entries), for `table_addr`.
fn config_table() -> Vec<u8> {
    let mut entries = Vec::new();
    let mut count = 0u16;
    // The boot processor: enabled (bit 0), the BSP (bit 1).
    entries.push(ENTRY_PROCESSOR);
    entries.push(0);
    entries.push(0x14);
    entries.push(0b11);
    entries.extend(CPUID_1_EAX.to_le_bytes());
    entries.extend((CPUID_1_EDX | CPUID_1_EDX_APIC).to_le_bytes());
    entries.extend([0; 8]);
    count += 1;
    entries.push(ENTRY_BUS);
    entries.push(ISA_BUS);
    entries.extend(b"ISA   ");
    count += 1;
    entries.push(ENTRY_IOAPIC);
    entries.push(IOAPIC_ID);
    entries.push(ioapic::VERSION as u8);
    entries.push(1);
    entries.extend(ioapic::BASE.to_le_bytes());
    count += 1;
    // ISA IRQs, edge-triggered and active high as the ISA bus conforms to
    // (flags 0); IRQ 2 is the 8259 cascade and reaches no pin.
    for irq in (0u8..16).filter(|&i| i != 2) {
        let pin = ioapic::pin_of_isa_irq(irq) as u8;
        entries.extend([ENTRY_IO_INTERRUPT, INT_VECTORED, 0, 0, ISA_BUS, irq, IOAPIC_ID, pin]);
        count += 1;
    }
    // LINT0: the 8259 (ExtINT); LINT1: NMI; to every local APIC (0xFF).
    for (kind, lint) in [(INT_EXTINT, 0u8), (INT_NMI, 1)] {
        entries.extend([ENTRY_LOCAL_INTERRUPT, kind, 0, 0, ISA_BUS, 0, 0xFF, lint]);
        count += 1;
    }
    let mut table = Vec::with_capacity(44 + entries.len());
    table.extend(b"PCMP");
    table.extend(((44 + entries.len()) as u16).to_le_bytes());
    table.push(4); // specification 1.4
    table.push(0); // checksum, below
    table.extend(b"RINGBACK");
    table.extend(b"PC          ");
    table.extend([0; 6]); // no OEM table
    table.extend(count.to_le_bytes());
    table.extend(((lapic::DEFAULT_BASE & 0xFFFF_F000) as u32).to_le_bytes());
    table.extend([0; 4]); // no extended table
    table.extend(entries);
    table[7] = checksum(&table);
    table
}

/// Writes the floating pointer and the table into the BIOS area.
pub fn install(platform: &mut Platform) -> Result<(), crate::VmError> {
    let table_addr = FLOATING_POINTER + 16;
    let table = config_table();
    let mut pointer = Vec::with_capacity(16);
    pointer.extend(b"_MP_");
    pointer.extend(table_addr.to_le_bytes());
    pointer.push(1); // length in 16-byte units
    pointer.push(4); // specification 1.4
    pointer.push(0); // checksum, below
                     // Feature byte 1 = 0: the configuration table is present; feature
                     // byte 2 bit 7 clear: virtual-wire mode, no IMCR.
    pointer.extend([0; 5]);
    pointer[10] = checksum(&pointer);
    platform.mem.load(FLOATING_POINTER, &pointer)?;
    platform.mem.load(table_addr, &table)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bus::Bus;

    #[test]
    fn the_floating_pointer_and_table_check_out_as_a_kernel_reads_them() {
        let mut p = Platform::new(2 << 20, 0);
        install(&mut p).expect("fits");
        let byte = |p: &mut Platform, a: u32| p.read_phys(a, 1, 0) as u8;
        // A kernel scans 0xF0000-0xFFFFF on 16-byte boundaries for "_MP_".
        let found = (0xF_0000..0x10_0000u32)
            .step_by(16)
            .find(|&a| (0..4).map(|i| byte(&mut p, a + i)).eq(b"_MP_".iter().copied()))
            .expect("found");
        let sum = (0..16).fold(0u8, |s, i| s.wrapping_add(byte(&mut p, found + i)));
        assert_eq!(sum, 0, "floating pointer checksum");
        let table = p.read_phys(found + 4, 4, 0);
        let len = p.read_phys(table + 4, 2, 0);
        let sum = (0..len).fold(0u8, |s, i| s.wrapping_add(byte(&mut p, table + i)));
        assert_eq!(sum, 0, "table checksum");
        assert_eq!(p.read_phys(table + 36, 4, 0), 0xFEE0_0000);
        // Entries: a processor (20 bytes), then 8-byte ones; IRQ 0 is on pin 2.
        let count = p.read_phys(table + 34, 2, 0);
        let mut at = table + 44;
        let mut irq0_pin = None;
        for _ in 0..count {
            let kind = byte(&mut p, at);
            if kind == ENTRY_IO_INTERRUPT && byte(&mut p, at + 5) == 0 {
                irq0_pin = Some(byte(&mut p, at + 7));
            }
            at += if kind == ENTRY_PROCESSOR { 20 } else { 8 };
        }
        assert_eq!(at, table + len, "the entries fill the table");
        assert_eq!(irq0_pin, Some(2));
    }
}
