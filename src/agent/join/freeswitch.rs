//! The FreeSWITCH join step on telephony nodes: FreeSWITCH started with the cluster
//! settings of `/etc/freeswitch/r2a/vars.xml` once the shared volume is mounted, after
//! the node's recordings folder there (`r2a_recordings_dir`) is made and given to the
//! `freeswitch` user; or, in an image built with `vendor = "skip"`, reported absent: the
//! node still registers in the pool and the rest of it works.

use anyhow::Context as _;

use super::Progress;
use crate::agent::host::Invocation;
use crate::agent::steps::Context;

/// FreeSWITCH's unit, from the vendor's package.
pub const UNIT: &str = "freeswitch.service";
/// Its binary; the package is installed when it is there.
pub const BINARY: &str = "/usr/bin/freeswitch";
/// The cluster settings r2a-image renders for FreeSWITCH.
pub const CLUSTER_VARS: &str = "/etc/freeswitch/r2a/vars.xml";
/// The user FreeSWITCH's package runs it as.
const USER: &str = "freeswitch";

/// One attempt: absent, or started and active.
pub fn attempt(context: &mut Context<'_>) -> anyhow::Result<Progress> {
    if !context.root.path(BINARY).exists() {
        return Ok(Progress::in_place(format!(
            "FreeSWITCH is absent: the image was built without the vendor packages \
             ({BINARY} missing); nothing to start"
        )));
    }
    let vars_path = context.root.path(CLUSTER_VARS);
    let vars = std::fs::read_to_string(&vars_path)
        .with_context(|| format!("reading {}", vars_path.display()))?;
    let recordings = recordings_dir(&vars).with_context(|| {
        format!(
            "{} sets no r2a_recordings_dir; build the image again",
            vars_path.display()
        )
    })?;
    // On the shared volume, which the step before mounted; made again if removed.
    context.host.run(&Invocation::new(
        "install",
        ["-d", "-m", "0750", "-o", USER, "-g", USER, recordings],
    ))?;
    let started = super::ensure_started(context.host, UNIT)?;
    let state = Invocation::new("systemctl", ["is-active", UNIT]);
    if context
        .host
        .probe(&state, super::SYSTEMCTL_NOT_ACTIVE)?
        .is_none()
    {
        return Ok(Progress::waiting(format!(
            "waiting for {UNIT} to be active"
        )));
    }
    let detail = format!("{UNIT} is active");
    Ok(if started {
        Progress::changed(detail)
    } else {
        Progress::in_place(detail)
    })
}

/// The recordings folder `vars.xml` gives FreeSWITCH (`r2a_recordings_dir=...`).
fn recordings_dir(vars: &str) -> Option<&str> {
    const KEY: &str = "data=\"r2a_recordings_dir=";
    let start = vars.find(KEY)? + KEY.len();
    let value = &vars[start..];
    let value = &value[..value.find('"')?];
    value.starts_with('/').then_some(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_recordings_folder_is_read_from_the_cluster_settings() {
        let set = |value: &str| {
            format!(
                "<include>\n  <X-PRE-PROCESS cmd=\"set\" data=\"r2a_recordings_dir={value}\"/>\n</include>"
            )
        };
        // (vars.xml, folder)
        let table = [
            (
                set("/srv/shared/recordings/tel1"),
                Some("/srv/shared/recordings/tel1"),
            ),
            (set("recordings/tel1"), None),
            (set(""), None),
            ("<include/>".to_string(), None),
            ("data=\"r2a_recordings_dir=/srv/x".to_string(), None),
        ];
        for (vars, folder) in &table {
            assert_eq!(recordings_dir(vars), *folder, "{vars}");
        }
    }
}
