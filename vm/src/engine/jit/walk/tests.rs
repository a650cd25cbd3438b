//! The fill in host code against the general fill, on random page tables:
//! where it takes a miss itself it must leave exactly what the general
//! fill leaves (the TLB entry, the host slot, the count of fills, the
//! slots in use, RAM and the dirty pages untouched); where it declines it
//! must leave everything as it was.

use super::super::cache::CodeCache;
use super::super::tests::Rng;
use super::super::{fill_host_slot as general_fill, Env, FillFn, Jit, JitConfig};
use super::assemble;
use crate::bus::Bus;
use crate::cpu::mmu::tlb_layout::{DIRTY, USER, WRITABLE};
use crate::cpu::mmu::Access;
use crate::cpu::state::{cr0, cr4};
use crate::cpu::Cpu;
use crate::platform::{Platform, Watch};

const RAM: usize = 4 << 20;

/// What the host code returns where it hands the miss on.
const DECLINED: u32 = 2;

thread_local! {
    /// The arguments the host code handed on, as `decline` got them.
    static HANDED_ON: std::cell::Cell<(usize, usize, u32, u32, u32)> = const { std::cell::Cell::new((0, 0, 0, 0, 0)) };
}

extern "sysv64" fn decline(cpu: *mut Cpu, env: *mut Env, linear: u32, size: u32, write: u32) -> u32 {
    HANDED_ON.set((cpu as usize, env as usize, linear, size, write));
    DECLINED
}

/// A page table entry's bits, each set at random (present and accessed
/// mostly, so that many walks are the host code's to make).
fn entry_bits(rng: &mut Rng) -> u32 {
    let mut bits = 0;
    for (bit, one_in) in [
        (1, 8),
        (1 << 1, 2),
        (1 << 2, 2),
        (1 << 5, 6),
        (1 << 6, 2),
        (1 << 7, 12),
        (1 << 8, 2),
    ] {
        // Present (bit 0) and accessed (bit 5) are missing one time in
        // `one_in`; the others are set half the time or less.
        let set = if bit == 1 || bit == 1 << 5 {
            !rng.chance(one_in)
        } else {
            rng.chance(one_in)
        };
        if set {
            bits |= bit;
        }
    }
    bits
}

/// A physical page for a table or a mapped page: mostly RAM, sometimes
/// past it, in the ROM's shadow, or with address bit 20 set (which the
/// gate may fold onto another page).
fn some_page(rng: &mut Rng) -> u32 {
    match rng.below(10) {
        0 => 0x0080_0000 + (rng.below(256) as u32) * 0x1000,
        1 => 0x000E_0000 + (rng.below(32) as u32) * 0x1000,
        2 => 0x0010_0000 | ((0x20 + rng.below(16) as u32) * 0x1000),
        // The last pages of RAM, and the first past it.
        3 => 0x003F_E000 + (rng.below(3) as u32) * 0x1000,
        _ => 0x0020_0000 + (rng.below(256) as u32) * 0x1000,
    }
}

struct Case {
    platform: Platform,
    /// Where the walk's two entries lie.
    tables: [u32; 2],
    cpu: Cpu,
    linear: u32,
    size: u32,
    write: bool,
    user: bool,
    wp: bool,
}

fn case(rng: &mut Rng) -> Case {
    let mut platform = Platform::new(RAM, 0);
    let mut cpu = Cpu::new();
    let linear = rng.next() as u32 & !3 | if rng.chance(8) { 0xFFD } else { 0 };
    let size = [1, 2, 4][rng.below(3) as usize];
    let (write, user, wp) = (rng.chance(2), rng.chance(3), rng.chance(2));
    if rng.chance(4) {
        // The gate closed (the controller's command 0xDD; port 0x92 too).
        platform.io_write(0x64, 1, 0xDD, 0);
        platform.io_write(0x92, 1, 0, 0);
        assert!(!platform.a20());
    }
    if rng.chance(3) {
        platform.protect_rom_shadow(0xE_0000, 0x10_0000);
    }
    let table = if rng.chance(6) { some_page(rng) } else { 0x1_1000 };
    let page = some_page(rng);
    // With address bit 20, which the gate may fold away.
    let cr3 = if rng.chance(4) { 0x11_0000 } else { 0x1_0000 };
    let pde_at = cr3 | (linear >> 22) << 2;
    let pte_at = table | ((linear >> 12) & 0x3FF) << 2;
    platform.write_phys(pde_at, 4, table | entry_bits(rng), 0);
    platform.write_phys(pte_at, 4, page | entry_bits(rng), 0);
    // Where the gate folds an entry's address, other entries lie at the
    // address itself, leading to other pages: a walk that skipped the gate
    // would find them.
    let (a20, _, _) = platform.plain_ram();
    if pde_at & a20 != pde_at {
        platform.mem.write(pde_at, 4, 0x1_3000 | 0x27);
        platform
            .mem
            .write(0x1_3000 | ((linear >> 12) & 0x3FF) << 2, 4, 0x3F_0000 | 0x67);
    }
    if pte_at & a20 != pte_at {
        platform.mem.write(pte_at, 4, 0x3F_1000 | 0x67);
    }
    let target = page as usize >> 12;
    if rng.chance(2) {
        platform.mem.mark_page_dirty(target);
    }
    if rng.chance(5) {
        platform.mem.watch_code(page + rng.below(0x1000) as u32, 1);
    }
    if rng.chance(12) {
        platform.watches.push(Watch {
            start: 0x3F_0000,
            end: 0x3F_0004,
            read: false,
            write: true,
        });
    }
    let st = &mut cpu.state;
    st.cr0 = cr0::PE | cr0::PG | if wp { cr0::WP } else { 0 };
    st.cr3 = cr3;
    st.cr4 = if rng.chance(2) { cr4::PSE } else { 0 } | if rng.chance(2) { cr4::PGE } else { 0 };
    if rng.chance(6) {
        // The slot already taken (by this very page where the walk
        // succeeds): the host code leaves that to the general fill.
        let _ = cpu.translate(&mut platform, linear, Access::Read, user);
    }
    Case {
        platform,
        tables: [pde_at, pte_at],
        cpu,
        linear,
        size,
        write,
        user,
        wp,
    }
}

/// The walk's two entries as they stand.
fn tables(c: &mut Case) -> [u32; 2] {
    c.tables.map(|at| c.platform.read_phys(at, 4, 0))
}

/// Runs `fill` for the case's access on `cpu`, with `env` made for it.
fn run(fill: FillFn, env: &mut Env, c: &mut Case, cpu: &mut Cpu) -> u32 {
    env.platform = &mut c.platform;
    env.mem.modes_may_have_changed();
    env.mem.refresh(cpu, &mut c.platform);
    // The privilege the access is made at, as the compare of modes would
    // find it for a CPL 3 or CPL 0 guest.
    env.mem.read_permissions = if c.user { USER } else { 0 };
    env.mem.write_permissions = DIRTY
        | if c.user {
            USER | WRITABLE
        } else if c.wp {
            WRITABLE
        } else {
            0
        };
    fill(cpu, env, c.linear, c.size, u32::from(c.write))
}

#[test]
fn the_fill_in_host_code_leaves_what_the_general_fill_leaves() {
    let mut cache = CodeCache::new(4096);
    let base = cache.next_address().expect("a code mapping");
    let code = assemble(base, decline).expect("the fill assembles");
    assert!(cache.fits(code.len()));
    let at = cache.install(&code);
    // SAFETY: `at` is the start of the code just assembled for this very
    // address, which follows the `FillFn` ABI and stays mapped as long as
    // `cache` lives, past every call below.
    let host_fill: FillFn = unsafe { std::mem::transmute::<usize, FillFn>(at) };
    let mut jit = Jit::new(JitConfig::default());
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let (mut taken, mut declined) = (0, 0);
    for n in 0..20_000 {
        let mut c = case(&mut rng);
        let before = c.cpu.clone();
        let tables_before = tables(&mut c);
        let dirty_before: Vec<bool> = (0..RAM / 4096).map(|p| c.platform.mem.is_dirty(p)).collect();
        let mut by_host = c.cpu.clone();
        let made = run(host_fill, &mut jit.env, &mut c, &mut by_host);
        let dirty_after: Vec<bool> = (0..RAM / 4096).map(|p| c.platform.mem.is_dirty(p)).collect();
        assert_eq!(
            tables(&mut c),
            tables_before,
            "case {n}: the host code wrote the tables"
        );
        assert_eq!(dirty_before, dirty_after, "case {n}: the host code marked a page dirty");
        if made == DECLINED {
            let env: *mut Env = &mut *jit.env;
            let want = (
                &mut by_host as *mut Cpu as usize,
                env as usize,
                c.linear,
                c.size,
                u32::from(c.write),
            );
            assert_eq!(HANDED_ON.get(), want, "case {n}: the arguments handed on changed");
            declined += 1;
            assert!(
                by_host.tlb.same_as(&before.tlb),
                "case {n}: declined, yet the TLB changed"
            );
            continue;
        }
        assert_eq!(made, 1, "case {n}");
        taken += 1;
        let mut by_general = before.clone();
        let general = run(general_fill, &mut jit.env, &mut c, &mut by_general);
        assert_eq!(
            general, 1,
            "case {n}: the host code made a slot the general fill refuses"
        );
        assert!(
            by_host.tlb.same_as(&by_general.tlb),
            "case {n}: linear {:#x} size {} write {} user {} wp {}: the TLBs differ:\n{:?}\n{:?}",
            c.linear,
            c.size,
            c.write,
            c.user,
            c.wp,
            by_host.tlb,
            by_general.tlb
        );
        assert_eq!(
            tables(&mut c),
            tables_before,
            "case {n}: the general fill wrote the tables"
        );
        // And the reference's own walk finds the same entry, setting no
        // bit; a slot open to stores is one a store would find so.
        let mut by_reference = before.clone();
        let access = if c.write { Access::Write } else { Access::Read };
        let phys = by_reference.translate(&mut c.platform, c.linear, access, c.user);
        assert!(phys.is_ok(), "case {n}: the reference faults");
        assert!(
            by_reference.tlb.same_entries(&by_host.tlb),
            "case {n}: the reference's TLB differs"
        );
        assert_eq!(tables(&mut c), tables_before, "case {n}: the reference set a bit");
        let page = c.linear & !0xFFF;
        if by_host.tlb.host_slot(c.linear).write_tag == page {
            let (a20, _, _) = c.platform.plain_ram();
            let frame = (phys.unwrap_or(0) & a20) as usize >> 12;
            assert!(
                by_reference.tlb.lookup(c.linear, true, c.user, c.wp).is_some()
                    && c.platform.mem.is_dirty(frame)
                    && !c.platform.mem.holds_watched_code(frame),
                "case {n}: a slot open to stores that a store could not take straight"
            );
        }
    }
    // Both ways are exercised well.
    assert!(taken > 1_000 && declined > 1_000, "taken {taken}, declined {declined}");
}
