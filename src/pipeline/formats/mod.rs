//! The format writers: from a finished image tree, each artifact of a role (the tarball,
//! the GPT disk and its qcow2, the hybrid ISO, the PXE set), and the GRUB images and live
//! root they boot with.

mod chunked_gzip;
pub mod disk;
mod fs_times;
pub mod grub;
pub mod iso;
pub mod live;
pub(super) mod outputs;
pub mod pxe;
pub mod tarball;
