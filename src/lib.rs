//! r2a-appliance: builds bootable Debian 13 appliance images, one per role of a Ring2All
//! PBX cluster, from one cluster manifest; `r2a-node` inside each image joins its node to
//! the cluster at first boot.

pub mod agent;
pub mod boot;
pub mod cache;
pub mod cli;
pub mod cluster;
pub mod diag;
pub mod difference;
pub mod exec;
pub mod fsutil;
pub mod hash;
pub mod interrupt;
pub mod lock;
pub mod manifest;
pub mod overlay;
pub mod payload;
pub mod pipeline;
pub mod pki;
pub mod plan;
pub mod progress;
pub mod project;
pub mod role;
pub mod sbom;
pub mod secrets;
pub mod seed;
pub mod signing;
pub mod timestamp;
pub mod tomldoc;
pub mod unpack;
pub mod userdb;
pub mod verify;
