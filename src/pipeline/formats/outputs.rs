//! Writes one role's artifacts from its finished tree, one format at a time. The raw disk
//! and the squashfs are made once and shared: qcow2 and the ISO's installer start from
//! the raw disk, the ISO and the PXE set from the squashfs.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::Context;

use super::disk::{self, DiskIds, DiskLayout};
use super::live::{self, KernelFiles};
use super::{grub, iso, pxe, tarball};
use crate::manifest::{Format, Node};
use crate::pipeline::boot_tools::BootTools;
use crate::pipeline::{BuildContext, ImageTree};

/// One file written, relative to the role's output folder.
pub struct Written {
    /// Relative path.
    pub path: String,
    /// The format it belongs to.
    pub format: Format,
    /// Whether it carries a node's secrets (readable by root only, whatever the image).
    pub private: bool,
}

/// A role's outputs in the making.
pub struct RoleOutputs<'t> {
    tree: &'t ImageTree,
    /// GRUB's tools, when a format boots.
    boot_tools: Option<&'t BootTools>,
    role: String,
    /// The role's folder in the staging area.
    dir: PathBuf,
    /// The image's content key: disk identifiers derive from it.
    key: String,
    raw: Option<PathBuf>,
    squashfs: Option<PathBuf>,
    kernel: Option<KernelFiles>,
}

impl<'t> RoleOutputs<'t> {
    /// Outputs of `tree` for `role`, written into `dir`.
    pub fn new(
        tree: &'t ImageTree,
        boot_tools: Option<&'t BootTools>,
        role: &str,
        dir: &Path,
        key: &str,
    ) -> RoleOutputs<'t> {
        RoleOutputs {
            tree,
            boot_tools,
            role: role.to_string(),
            dir: dir.to_path_buf(),
            key: key.to_string(),
            raw: None,
            squashfs: None,
            kernel: None,
        }
    }

    /// Writes `format`; returns its files and a note on what was done.
    pub fn write(
        &mut self,
        ctx: &BuildContext<'_>,
        format: Format,
        advance: &dyn Fn(u64),
    ) -> anyhow::Result<(Vec<Written>, String)> {
        let written = |path: &str| Written {
            path: path.to_string(),
            format,
            private: false,
        };
        match format {
            Format::Tar => {
                let members = ctx.options.cache.join(crate::cache::GZIP_MEMBERS);
                let chunks = tarball::write(
                    &self.tree.root,
                    &self.dir.join("rootfs.tar.gz"),
                    ctx.source_date_epoch,
                    &members,
                    advance,
                )?;
                let note = format!(
                    "{} chunks compressed, {} reused",
                    chunks.compressed, chunks.reused
                );
                Ok((vec![written("rootfs.tar.gz")], note))
            }
            Format::Raw => {
                let path = self.dir.join("disk.raw");
                self.raw_disk(ctx, Some(&path))?;
                Ok((vec![written("disk.raw")], "GPT, UEFI and BIOS".to_string()))
            }
            Format::Qcow2 => {
                let raw = self.raw_disk(ctx, None)?;
                disk::write_qcow2(&raw, &self.dir.join("disk.qcow2"))?;
                Ok((vec![written("disk.qcow2")], "compressed".to_string()))
            }
            Format::Iso => {
                let raw = self.raw_disk(ctx, None)?;
                let squashfs = self.squashfs(ctx)?;
                let name = format!("{}.iso", self.role);
                iso::write(
                    &iso::Sources {
                        tools: self.boot_tools()?,
                        kernel: self.kernel()?,
                        squashfs: &squashfs,
                        raw_disk: &raw,
                    },
                    &self.title(ctx),
                    &self.role,
                    &self.dir.join(&name),
                    self.tree.work.path(),
                    ctx.source_date_epoch,
                    DiskIds::derive(&self.key).iso_efi_serial,
                )?;
                Ok((vec![written(&name)], "live and install".to_string()))
            }
            Format::Pxe => {
                let squashfs = self.squashfs(ctx)?;
                let kernel = self.kernel()?;
                let nodes: Vec<_> = ctx.project.cluster.nodes_of(&self.role).collect();
                let payloads = self.payloads(ctx, &nodes)?;
                pxe::write(
                    &kernel,
                    &squashfs,
                    &self.title(ctx),
                    &nodes,
                    &payloads,
                    &self.dir.join("pxe"),
                    ctx.source_date_epoch,
                )?;
                let grub_work = self.work_folder("grub-net")?;
                grub::netboot_images(self.boot_tools()?, &grub_work, &self.dir.join("pxe"))?;
                let mut files: Vec<Written> = pxe::FILES
                    .iter()
                    .map(|file| written(&format!("pxe/{file}")))
                    .collect();
                for node in &nodes {
                    if let Some(mac) = &node.mac {
                        let stem = pxe::mac_file_stem(mac);
                        files.push(written(&format!("pxe/nodes/{stem}.ipxe")));
                        if payloads.contains_key(&node.name) {
                            files.push(Written {
                                private: true,
                                ..written(&format!("pxe/nodes/{}", pxe::payload_file(mac)))
                            });
                        }
                    }
                }
                let note = format!("{} node scripts", files.len() - pxe::FILES.len());
                Ok((files, note))
            }
        }
    }

    /// The packed payload of each node listed with a MAC, under `node_data = "seed"`.
    fn payloads(
        &self,
        ctx: &BuildContext<'_>,
        nodes: &[&Node],
    ) -> anyhow::Result<BTreeMap<String, Vec<u8>>> {
        let mut payloads = BTreeMap::new();
        for node in nodes.iter().filter(|node| node.mac.is_some()) {
            let files = self.tree.overlay.seed_files(&node.name);
            if !files.is_empty() {
                let bytes = crate::payload::pack(&files, ctx.source_date_epoch)?;
                payloads.insert(node.name.clone(), bytes);
            }
        }
        Ok(payloads)
    }

    fn title(&self, ctx: &BuildContext<'_>) -> String {
        format!("Ring2All {} ({})", self.role, ctx.project.cluster.name)
    }

    fn kernel(&mut self) -> anyhow::Result<KernelFiles> {
        if self.kernel.is_none() {
            self.kernel = Some(KernelFiles::of_tree(&self.tree.root)?);
        }
        Ok(self.kernel.clone().expect("set above"))
    }

    /// The raw disk, made once: at `artifact` when the raw format is wanted, else in the
    /// work folder.
    fn raw_disk(
        &mut self,
        ctx: &BuildContext<'_>,
        artifact: Option<&Path>,
    ) -> anyhow::Result<PathBuf> {
        // Formats are written in order, so the raw artifact, when wanted, comes first.
        if let Some(raw) = &self.raw {
            return Ok(raw.clone());
        }
        let path =
            artifact.map_or_else(|| self.tree.work.path().join("disk.raw"), Path::to_path_buf);
        let layout =
            DiskLayout::for_tree(disk::content_size(&self.tree.root)?, ctx.options.disk_size)?;
        let ids = DiskIds::derive(&self.key);
        let grub_work = self.work_folder("grub")?;
        let images = grub::core_images(self.boot_tools()?, &grub_work, &ids.esp_uuid())?;
        disk::write_raw(
            &self.tree.root,
            &path,
            &layout,
            &ids,
            &images,
            &self.title(ctx),
            ctx.source_date_epoch,
        )?;
        self.raw = Some(path.clone());
        Ok(path)
    }

    fn boot_tools(&self) -> anyhow::Result<&'t BootTools> {
        self.boot_tools
            .context("the boot tools' layer was not made for a format that boots")
    }

    /// A new folder `name` in the tree's work folder.
    fn work_folder(&self, name: &str) -> anyhow::Result<PathBuf> {
        let folder = self.tree.work.path().join(name);
        std::fs::create_dir_all(&folder)
            .with_context(|| format!("creating {}", folder.display()))?;
        Ok(folder)
    }

    fn squashfs(&mut self, ctx: &BuildContext<'_>) -> anyhow::Result<PathBuf> {
        if let Some(path) = &self.squashfs {
            return Ok(path.clone());
        }
        let path = self.tree.work.path().join("rootfs.squashfs");
        live::write_squashfs(&self.tree.root, &path, ctx.source_date_epoch)?;
        self.squashfs = Some(path.clone());
        Ok(path)
    }
}
