//! `r2a-image boot`: its options and the boot of a published artifact in QEMU.

use std::path::{Path, PathBuf};

use anyhow::Context;

use crate::boot::BootOptions;
use crate::boot::qemu::{Accel, Firmware, PxeLoader};
use crate::diag::UsageError;
use crate::manifest::Format;
use crate::project::Project;

/// `r2a-image boot`'s options.
#[derive(Debug, clap::Args)]
pub struct BootArgs {
    /// The cluster manifest.
    manifest: PathBuf,
    /// The role whose image boots.
    #[arg(long)]
    role: String,
    /// The node whose NoCloud seed is attached (default: the role's first node).
    #[arg(long, value_name = "NAME")]
    node: Option<String>,
    /// Which artifact boots (a tarball does not).
    #[arg(long, value_parser = bootable_format(), default_value = "qcow2")]
    format: Format,
    /// The firmware.
    #[arg(long, value_enum, default_value = "uefi")]
    firmware: Firmware,
    /// KVM or software emulation (auto: KVM when it works, else TCG).
    #[arg(long, value_enum, default_value = "auto")]
    accel: Accel,
    /// ISO only: take the install entry, install onto a blank disk, then boot that disk.
    #[arg(long)]
    install: bool,
    /// ISO only: attach it as a USB stick (the hybrid image) instead of a CD.
    #[arg(long)]
    usb: bool,
    /// PXE only: the network boot loader the firmware's iPXE starts first.
    #[arg(long, value_enum, default_value = "ipxe")]
    pxe_loader: PxeLoader,
    /// Exit 0 once multi-user.target is reached, r2a-firstboot.service succeeded and no
    /// unit failed; exit 1 with the console's tail otherwise.
    #[arg(long)]
    check: bool,
    /// The check's time limit in seconds.
    #[arg(long, value_name = "SECONDS", default_value_t = 900)]
    timeout: u64,
    /// Guest memory in MiB (the live formats hold the system in RAM).
    #[arg(long, value_name = "MIB", default_value_t = 2048)]
    memory: u32,
    /// Where the images were published.
    #[arg(long, value_name = "DIR", default_value = "out")]
    out: PathBuf,
}

pub fn boot(data: &Path, args: BootArgs) -> anyhow::Result<()> {
    anyhow::ensure!(
        !(args.install || args.usb) || args.format == Format::Iso,
        UsageError("--install and --usb are for the ISO; add --format iso".into())
    );
    anyhow::ensure!(
        args.pxe_loader == PxeLoader::Ipxe || args.format == Format::Pxe,
        UsageError("--pxe-loader is for PXE boots; add --format pxe".into())
    );
    crate::interrupt::install()?;
    let project = Project::load_for_seeds(data, &args.manifest)?;
    let options = BootOptions {
        role: args.role,
        node: args.node,
        format: args.format,
        firmware: args.firmware,
        accel: args.accel,
        install: args.install,
        usb: args.usb,
        pxe_loader: args.pxe_loader,
        check: args.check,
        timeout: std::time::Duration::from_secs(args.timeout),
        memory_mib: args.memory,
        // Read from, not made: a boot needs what a build published there.
        out: std::path::absolute(&args.out)
            .with_context(|| format!("resolving {}", args.out.display()))?,
    };
    if let Some(report) = crate::boot::boot(&project, &options)? {
        println!(
            "r2a-image: {} booted ({}, {:?}): multi-user.target reached, r2a-firstboot.service succeeded{}, no failed unit; addresses {}",
            report.node.as_deref().unwrap_or("?"),
            options.format.name(),
            options.firmware,
            report
                .firstboot_done_seconds
                .map(|s| format!(" at {s:.1} s"))
                .unwrap_or_default(),
            report.addresses.join(", ")
        );
    }
    Ok(())
}

/// The formats `boot` starts: every one but the tarball.
fn bootable_format() -> impl clap::builder::TypedValueParser<Value = Format> {
    use clap::builder::TypedValueParser;
    clap::builder::PossibleValuesParser::new(["raw", "qcow2", "iso", "pxe"]).map(|name| {
        <Format as clap::ValueEnum>::from_str(&name, false)
            .expect("the parser admits format names only")
    })
}
