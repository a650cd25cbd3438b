//! Flat binaries entered in real mode, as a BIOS hands over a boot sector
//! at 0000:7C00.

use crate::cpu::state::{attr, cr0, flags, reg, SegReg, Segment};
use crate::cpu::CpuState;
use crate::platform::Platform;
use crate::VmError;

/// Whether `image` looks like a boot sector (512 bytes ending in 55 AA).
pub fn is_boot_sector(image: &[u8]) -> bool {
    image.len() == 512 && image[510] == 0x55 && image[511] == 0xAA
}

/// Loads a flat binary at `addr` and enters it in real mode at that address,
/// with CS:IP = (addr >> 4):(addr & 0xF) normalised to segment 0 when the
/// address is below 64 KiB (so a boot sector runs at 0000:7C00), DS = ES =
/// SS = 0 and SP just below the image, as a BIOS hands over a boot sector.
pub fn load_flat(platform: &mut Platform, image: &[u8], addr: u32) -> Result<CpuState, VmError> {
    if addr >= 0x10_0000 {
        return Err(VmError::BadImage(format!(
            "flat binaries are entered in real mode, so they must load below 1 MiB (asked for {addr:#x})"
        )));
    }
    platform.mem.load(addr, image)?;
    let mut st = CpuState::reset();
    let (cs, ip) = if addr < 0x1_0000 {
        (0, addr)
    } else {
        ((addr >> 4) as u16, addr & 0xF)
    };
    for s in SegReg::ALL {
        st.segs[s as usize] = Segment::real_mode(0);
    }
    let mut code = Segment::real_mode(cs);
    code.attr |= attr::CODE;
    st.segs[SegReg::Cs as usize] = code;
    st.eip = ip;
    st.regs[reg::ESP] = if addr < 0x1_0000 { addr } else { 0xFFFE };
    st.regs[reg::EDX] = 0x80; // boot drive: first hard disk
    st.cr0 = cr0::ET;
    st.eflags = flags::FIXED1;
    Ok(st)
}
