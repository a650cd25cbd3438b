//! Starting from the reset vector with a firmware ROM, as QEMU's `-bios`
//! does (SDM Vol. 3A, 9.1 "Initialization overview"): the image is mapped
//! so that it ends at 4 GiB, its last 128 KiB (all of it, if smaller) also
//! at the top of the first megabyte, 0xE0000-0xFFFFF, read-only; the CPU
//! is in its reset state at F000:FFF0 with CS's base 0xFFFF0000, so its
//! first instruction is the ROM's sixteenth byte from the end; the local
//! APIC is as after reset (software-disabled; LINT0 passing the 8259, as
//! QEMU has it). The ROM is the firmware: no MP table or boot information
//! is written.

use super::VmError;
use crate::cpu::state::reg;
use crate::cpu::CpuState;
use crate::exec::system::CPUID_1_EAX;
use crate::mem::Rom;
use crate::platform::Platform;

/// The ISA BIOS area's size, below 1 MiB.
const ISA_BIOS_BYTES: usize = 128 << 10;
/// QEMU's limits: a whole number of 64 KiB blocks, at most 16 MiB.
const BLOCK: usize = 64 << 10;
const MAX_BYTES: usize = 16 << 20;

pub fn load_bios(platform: &mut Platform, image: &[u8]) -> Result<CpuState, VmError> {
    let len = image.len();
    if len == 0 || !len.is_multiple_of(BLOCK) || len > MAX_BYTES {
        return Err(VmError::BadImage(format!(
            "a BIOS image must be a whole number of 64 KiB blocks, at most 16 MiB (this one is {len} bytes)"
        )));
    }
    platform.mem.add_rom(Rom {
        base: 0u32.wrapping_sub(len as u32),
        bytes: image.to_vec(),
    });
    let low = len.min(ISA_BIOS_BYTES);
    let start = 0x10_0000 - low as u32;
    platform.mem.load(start, &image[len - low..])?;
    platform.protect_rom_shadow(start, 0x10_0000);
    platform.irq.lapic.reset();
    let mut st = CpuState::reset();
    // EDX holds the processor's signature after reset (SDM Vol. 3A, 9.1.4).
    st.regs[reg::EDX] = CPUID_1_EAX;
    Ok(st)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bus::Bus;

    fn rom(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i / 4096) as u8 ^ i as u8).collect()
    }

    #[test]
    fn the_rom_ends_at_4g_and_its_last_128k_sit_below_1m_read_only() {
        let mut p = Platform::new(2 << 20, 0);
        let image = rom(256 << 10);
        let st = load_bios(&mut p, &image).expect("loads");
        assert_eq!(st.segs[1].base.wrapping_add(st.eip), 0xFFFF_FFF0, "the reset vector");
        assert_eq!(
            p.read_phys(0xFFFF_FFF0, 4, 0),
            u32::from_le_bytes(image[(256 << 10) - 16..][..4].try_into().unwrap())
        );
        assert_eq!(p.read_phys(0xFFFC_0000, 1, 0), u32::from(image[0]));
        let alias = |p: &mut Platform, a: u32| p.read_phys(a, 1, 0) as u8;
        assert_eq!(alias(&mut p, 0xE_0000), image[128 << 10]);
        assert_eq!(alias(&mut p, 0xF_FFF0), image[(256 << 10) - 16]);
        let before = alias(&mut p, 0xF_1234);
        p.write_phys(0xF_1234, 1, u32::from(!before), 0);
        assert_eq!(alias(&mut p, 0xF_1234), before, "writes to the ROM are dropped");
        p.write_phys(0xD_FFFF, 1, 0x5A, 0);
        assert_eq!(alias(&mut p, 0xD_FFFF), 0x5A, "RAM below it is RAM");
    }

    #[test]
    fn a_64k_rom_fills_the_last_64k_below_1m() {
        let mut p = Platform::new(2 << 20, 0);
        let image = rom(64 << 10);
        load_bios(&mut p, &image).expect("loads");
        assert_eq!(p.read_phys(0xF_0000, 1, 0), u32::from(image[0]));
        p.write_phys(0xE_0000, 1, 0x77, 0);
        assert_eq!(p.read_phys(0xE_0000, 1, 0), 0x77, "0xE0000 is RAM under a 64 KiB ROM");
    }

    #[test]
    fn images_of_odd_sizes_are_refused_by_name() {
        for len in [0, 1000, (64 << 10) + 1, 32 << 20] {
            let mut p = Platform::new(2 << 20, 0);
            let e = load_bios(&mut p, &vec![0; len]).expect_err("odd size").to_string();
            assert!(e.contains("64 KiB blocks") && e.contains(&len.to_string()), "{e}");
        }
    }
}
