//! `r2a-image boot`: boots a published artifact in QEMU with a node's NoCloud seed
//! attached, on a serial console. With `--check` it succeeds once the node's boot report
//! says `multi-user.target` is reached, `r2a-firstboot.service` succeeded and no unit
//! failed; anything else fails with the console's tail. The artifact itself is never
//! written to: disks boot from a throwaway qcow2 overlay, a size bigger so that the
//! root's growth on first boot is exercised.

pub mod console;
pub mod disks;
pub mod qemu;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, bail};

use crate::agent::report::BootReport;
use crate::diag::UsageError;
use crate::exec::{CommandExt, require_tools};
use crate::manifest::{Format, Node};
use crate::pipeline::ClusterIndex;
use crate::project::Project;
use console::{Ending, Run, Watch};
use qemu::{Accel, Drive, Firmware, Machine, Network, PxeLoader};

/// How long `--accel auto` waits for the kernel under KVM before it falls back to TCG.
const KVM_STALL: Duration = Duration::from_secs(60);
/// Room the overlay disk has beyond the image, for the root to grow into.
const GROWTH: u64 = 1 << 30;
/// The blank disk the ISO installs onto.
const INSTALL_DISK: u64 = 8 << 30;
/// A data disk's size when the node declares no `disk` size; stand-ins' size.
const DEFAULT_DATA_DISK: u64 = 16 << 30;
const STAND_IN_DISK: u64 = 1 << 30;

/// What to boot and how.
#[derive(Debug, Clone)]
pub struct BootOptions {
    /// The role whose artifact boots.
    pub role: String,
    /// The node whose seed is attached (default: the role's first).
    pub node: Option<String>,
    /// Which artifact.
    pub format: Format,
    /// The firmware.
    pub firmware: Firmware,
    /// The accelerator.
    pub accel: Accel,
    /// The ISO's entry: install instead of live.
    pub install: bool,
    /// The ISO as a USB stick instead of a CD.
    pub usb: bool,
    /// What a PXE boot loads first.
    pub pxe_loader: PxeLoader,
    /// Check the boot and stop, instead of an interactive console.
    pub check: bool,
    /// The check's time limit (each of the install's two boots gets it).
    pub timeout: Duration,
    /// Guest memory in MiB.
    pub memory_mib: u32,
    /// Where the images were published.
    pub out: PathBuf,
}

/// Boots and, with `check`, returns the node's boot report.
pub fn boot(project: &Project, options: &BootOptions) -> anyhow::Result<Option<BootReport>> {
    anyhow::ensure!(
        options.format != Format::Tar,
        UsageError("a rootfs tarball does not boot by itself; boot qcow2, raw, iso or pxe".into())
    );
    require_tools(&qemu::TOOLS)?;
    let node = pick_node(project, options)?;
    let work = tempfile::Builder::new()
        .prefix("r2a-boot-")
        .tempdir()
        .context("creating the boot's work folder")?;
    let mut machine = machine_for(project, node, options, work.path())?;
    if !options.check {
        let status = Command::new("qemu-system-x86_64")
            .args(machine.args())
            .status()
            .context("starting qemu-system-x86_64")?;
        anyhow::ensure!(status.success(), "QEMU ended with {status}");
        return Ok(None);
    }
    let run = run_with_fallback(&mut machine, options, None)?;
    match &run.ending {
        Ending::Report(report) if report.is_healthy() => Ok(Some(report.as_ref().clone())),
        Ending::Report(report) => bail!(
            "the boot finished unhealthy: multi-user.target {}, r2a-firstboot.service {}, failed units: {}\n{}",
            if report.multi_user {
                "reached"
            } else {
                "not reached"
            },
            report.firstboot,
            report.failed_units.join(", "),
            tail(&run)
        ),
        ending => bail!("{}\n{}", describe_ending(ending, options), tail(&run)),
    }
}

/// The machine that boots `node` from its role's artifact published in `options.format`,
/// with the node's seed and, when it declares one, a blank data disk where its
/// `data_disk` names it; the throwaway disks are made in `work`, which must outlive the
/// machine. For the ISO's install entry the install runs here, and the machine returned
/// boots the installed disk. The NIC is on restricted user networking; callers that run
/// several machines together plug it elsewhere.
pub fn machine_for(
    project: &Project,
    node: &Node,
    options: &BootOptions,
    work: &Path,
) -> anyhow::Result<Machine> {
    let cluster = &project.cluster;
    let cluster_out = options.out.join(&cluster.name);
    let artifact = published_artifact(&cluster_out, options)?;
    // Placed before anything boots: a name QEMU cannot give is refused up front.
    let data_disk = match &node.data_disk {
        Some(device) => Some(disks::place(
            device,
            &node.name,
            attached_before_data(options),
        )?),
        None => None,
    };
    let signer = project.signer()?;
    // One seed is quick: no stage lines around the boot's own.
    let quiet = crate::progress::Progress::detect(crate::progress::Verbosity::Quiet);
    let seeds = crate::seed::write_seeds(project, &[node], &options.out, signer.as_ref(), quiet)?;
    let mut machine = Machine {
        firmware: options.firmware,
        ovmf_vars: None,
        accel: resolve_accel(options.accel),
        memory_mib: options.memory_mib,
        drives: Vec::new(),
        mac: node
            .mac
            .clone()
            .unwrap_or_else(|| qemu::mac_for(&node.name)),
        network: Network::User { tftp: None },
        network_boot: false,
        headless: options.check,
    };
    reset_firmware(&mut machine, work)?;
    let seed = Drive::Cdrom(seeds[0].clone());
    match options.format {
        Format::Qcow2 | Format::Raw => {
            let disk = overlay(&artifact, options.format, work, GROWTH)?;
            machine.drives = vec![disk, seed];
        }
        Format::Iso if options.install => {
            let target = blank_disk(work, INSTALL_DISK)?;
            machine.drives = vec![iso_drive(&artifact, options), target.clone(), seed.clone()];
            install_phase(&machine, options)?;
            // The installed disk alone, as after taking the medium out; with the firmware's
            // boot entries reset (OVMF otherwise keeps trying the gone USB stick, then
            // stops in its shell).
            machine.drives = vec![target, seed];
            reset_firmware(&mut machine, work)?;
        }
        Format::Iso => machine.drives = vec![iso_drive(&artifact, options), seed],
        Format::Pxe => {
            let boot_file = options.pxe_loader.boot_file(options.firmware);
            machine.network = Network::User {
                tftp: Some((artifact.clone(), boot_file.to_string())),
            };
            machine.network_boot = true;
            machine.drives = vec![seed];
        }
        Format::Tar => unreachable!("refused above"),
    }
    if let Some(placement) = data_disk {
        let size = node.disk.unwrap_or(DEFAULT_DATA_DISK);
        machine.drives.extend(data_drives(placement, size, work)?);
    }
    Ok(machine)
}

/// The ISO's install entry: picked with its hotkey at the menu; the installer writes
/// the disk and reboots, which ends QEMU (`-no-reboot`).
fn install_phase(machine: &Machine, options: &BootOptions) -> anyhow::Result<()> {
    let mut machine = machine.clone();
    machine.headless = true;
    let answer = Some(("install to disk".to_string(), "i".to_string()));
    let run = run_with_fallback(&mut machine, options, answer)?;
    let installed = run.console.contains("r2a-node: installed ");
    match &run.ending {
        Ending::Exited(_) if installed => Ok(()),
        ending => bail!(
            "the installer did not finish: {}\n{}",
            describe_ending(ending, options),
            tail(&run)
        ),
    }
}

/// Runs once; with KVM chosen by `--accel auto`, a stalled start is retried under TCG.
fn run_with_fallback(
    machine: &mut Machine,
    options: &BootOptions,
    answer: Option<(String, String)>,
) -> anyhow::Result<Run> {
    let auto_kvm = options.accel == Accel::Auto && machine.accel == Accel::Kvm;
    let watch = Watch {
        timeout: options.timeout,
        answer,
        kvm_stall: auto_kvm.then_some(KVM_STALL),
        echo: true,
    };
    let run = console::run(machine, &watch)?;
    if matches!(run.ending, Ending::KvmStalled) {
        eprintln!(
            "r2a-image: the kernel did not start under KVM within {} s; booting again under TCG",
            KVM_STALL.as_secs()
        );
        machine.accel = Accel::Tcg;
        return console::run(
            machine,
            &Watch {
                kvm_stall: None,
                ..watch
            },
        );
    }
    Ok(run)
}

/// What a boot of `options` attaches before the data disk: the system disk of a disk
/// boot (or of the installed disk), the ISO as a USB stick.
fn attached_before_data(options: &BootOptions) -> disks::Attached {
    let disk_boot = matches!(options.format, Format::Qcow2 | Format::Raw)
        || (options.format == Format::Iso && options.install);
    disks::Attached {
        virtio: usize::from(disk_boot),
        usb_stick: options.format == Format::Iso && options.usb && !options.install,
    }
}

/// Blank sparse disks, thrown away with the boot: the stand-ins, then the data disk.
fn data_drives(placement: disks::Placement, size: u64, work: &Path) -> anyhow::Result<Vec<Drive>> {
    let mut drives = Vec::new();
    for index in 0..=placement.stand_ins {
        let (name, bytes) = if index == placement.stand_ins {
            ("data.qcow2".to_string(), size)
        } else {
            (format!("stand-in-{index}.qcow2"), STAND_IN_DISK)
        };
        let path = work.join(name);
        blank_qcow2(&path, bytes)?;
        drives.push(match placement.bus {
            disks::Bus::Virtio => Drive::Disk {
                path,
                format: "qcow2",
            },
            disks::Bus::Scsi => Drive::ScsiDisk(path),
            disks::Bus::Nvme => Drive::NvmeDisk(path),
        });
    }
    Ok(drives)
}

/// A fresh copy of OVMF's variable store for a UEFI machine.
fn reset_firmware(machine: &mut Machine, work: &Path) -> anyhow::Result<()> {
    if machine.firmware == Firmware::Uefi {
        let vars = work.join("OVMF_VARS.fd");
        std::fs::copy(qemu::OVMF_VARS, &vars).with_context(|| {
            format!(
                "copying {}; install the Debian package ovmf",
                qemu::OVMF_VARS
            )
        })?;
        machine.ovmf_vars = Some(vars);
    }
    Ok(())
}

fn iso_drive(iso: &Path, options: &BootOptions) -> Drive {
    if options.usb {
        Drive::UsbStick(iso.to_path_buf())
    } else {
        Drive::Cdrom(iso.to_path_buf())
    }
}

fn resolve_accel(accel: Accel) -> Accel {
    match accel {
        Accel::Auto if qemu::kvm_usable() => Accel::Kvm,
        Accel::Auto => Accel::Tcg,
        other => other,
    }
}

fn describe_ending(ending: &Ending, options: &BootOptions) -> String {
    match ending {
        Ending::Report(_) => "the node reported".to_string(),
        Ending::Exited(status) => format!("QEMU exited ({status}) before the boot report"),
        Ending::TimedOut => format!(
            "no boot report within {} s (raise it with --timeout)",
            options.timeout.as_secs()
        ),
        Ending::KvmStalled => "the kernel did not start under KVM".to_string(),
        Ending::KernelPanic => "the kernel panicked".to_string(),
        Ending::InitramfsShell => "the initramfs could not mount the root".to_string(),
    }
}

fn tail(run: &Run) -> String {
    format!(
        "last console lines ({:.0} s):\n{}",
        run.elapsed.as_secs_f64(),
        run.tail.join("\n")
    )
}

fn pick_node<'a>(project: &'a Project, options: &'a BootOptions) -> anyhow::Result<&'a Node> {
    let cluster = &project.cluster;
    match &options.node {
        Some(name) => {
            let node = cluster.node(name).ok_or_else(|| {
                UsageError(format!(
                    "no node `{name}` in {}",
                    cluster.manifest.path.display()
                ))
            })?;
            anyhow::ensure!(
                node.role == options.role,
                UsageError(format!(
                    "node {name} has role {}, not {}; pick a node of role {}",
                    node.role, options.role, options.role
                ))
            );
            Ok(node)
        }
        None => cluster.nodes_of(&options.role).next().ok_or_else(|| {
            UsageError(format!(
                "the manifest has no node of role {}; add one or pick another role",
                options.role
            ))
            .into()
        }),
    }
}

/// The published file (or PXE folder) of the role in `format`.
fn published_artifact(cluster_out: &Path, options: &BootOptions) -> anyhow::Result<PathBuf> {
    let index = ClusterIndex::read(cluster_out)?;
    let missing = || {
        format!(
            "no {} image of role {} in {}; build it with `r2a-image build MANIFEST --role {} --format {}`",
            options.format.name(),
            options.role,
            cluster_out.display(),
            options.role,
            options.format.name()
        )
    };
    let record = index.image(&options.role).with_context(missing)?;
    let artifact = record
        .artifacts
        .iter()
        .find(|a| a.format == options.format)
        .with_context(missing)?;
    let path = cluster_out.join(&artifact.path);
    let path = if options.format == Format::Pxe {
        path.parent()
            .expect("PXE files sit in a folder")
            .to_path_buf()
    } else {
        path
    };
    path.canonicalize()
        .with_context(|| format!("{} is gone; build again", path.display()))
}

/// A qcow2 overlay over the artifact, `extra` bytes bigger.
fn overlay(artifact: &Path, format: Format, work: &Path, extra: u64) -> anyhow::Result<Drive> {
    let backing_format = if format == Format::Qcow2 {
        "qcow2"
    } else {
        "raw"
    };
    let info = Command::new("qemu-img")
        .args(["info", "--output=json", "-f", backing_format])
        .arg(artifact)
        .output_text()?;
    let size = serde_json::from_str::<serde_json::Value>(&info)?["virtual-size"]
        .as_u64()
        .context("qemu-img info gave no virtual size")?;
    let path = work.join("disk.qcow2");
    Command::new("qemu-img")
        .args(["create", "-q", "-f", "qcow2", "-F", backing_format, "-b"])
        .arg(artifact)
        .arg(&path)
        .arg((size + extra).to_string())
        .run()?;
    Ok(Drive::Disk {
        path,
        format: "qcow2",
    })
}

fn blank_disk(work: &Path, size: u64) -> anyhow::Result<Drive> {
    let path = work.join("target.qcow2");
    blank_qcow2(&path, size)?;
    Ok(Drive::Disk {
        path,
        format: "qcow2",
    })
}

fn blank_qcow2(path: &Path, size: u64) -> anyhow::Result<()> {
    Command::new("qemu-img")
        .args(["create", "-q", "-f", "qcow2"])
        .arg(path)
        .arg(size.to_string())
        .run()
}
