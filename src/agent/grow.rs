//! The grow-root step: a disk image is made just big enough for its tree, so on a bigger
//! disk the root partition grows to the end of the disk (`growpart`, which also moves
//! the backup GPT there) and its ext4 grows online (`resize2fs`). A root that is not an
//! ext4 partition (the live overlay, a container) has nothing to grow.

use super::host::{FINDMNT_NOTHING_FOUND, Invocation, LONG_COMMAND_SECONDS};
use super::steps::{Context, Outcome};

/// `growpart` exits with 1 when the partition already fills the disk.
const GROWPART_NOCHANGE: i32 = 1;

/// Grows the root partition and file system to the disk.
pub fn ensure_root_grown(context: &mut Context<'_>) -> anyhow::Result<Outcome> {
    if !context.host.is_live() {
        return Ok(Outcome::unchanged(
            "not the running system: nothing to grow",
        ));
    }
    let mounted = context.host.probe(
        &Invocation::new(
            "findmnt",
            ["--noheadings", "--output", "SOURCE,FSTYPE,FSROOT", "/"],
        ),
        FINDMNT_NOTHING_FOUND,
    )?;
    let Some((source, fstype, fsroot)) = mounted.as_deref().and_then(|line| {
        let mut words = line.split_whitespace();
        Some((words.next()?, words.next()?, words.next()?))
    }) else {
        return Ok(Outcome::unchanged("the root is not a mounted device"));
    };
    if fstype != "ext4" || !source.starts_with("/dev/") {
        return Ok(Outcome::unchanged(format!(
            "the root is {fstype} on {source}: nothing to grow"
        )));
    }
    // A container's root is a folder of the host's file system (`/dev/vda1[/srv/tree]`).
    if fsroot != "/" {
        return Ok(Outcome::unchanged(format!(
            "the root is the folder {fsroot} of {source}: nothing to grow"
        )));
    }
    let source = source.to_string();
    let parent = context.host.query(&Invocation::new(
        "lsblk",
        [
            "--nodeps",
            "--noheadings",
            "--output",
            "PKNAME,PARTN",
            &source,
        ],
    ))?;
    let mut words = parent.split_whitespace();
    let (Some(disk), Some(number)) = (words.next(), words.next()) else {
        return Ok(Outcome::unchanged(format!(
            "the root {source} is not a partition: nothing to grow"
        )));
    };
    let disk = format!("/dev/{disk}");
    if context.host.dry_run() {
        let would = context.host.probe(
            &Invocation::new("growpart", ["--dry-run", disk.as_str(), number]),
            GROWPART_NOCHANGE,
        )?;
        return Ok(match would {
            Some(_) => Outcome::changed(format!(
                "would grow {source} (partition {number} of {disk}) and its ext4 to the end of the disk"
            )),
            None => Outcome::unchanged(format!("{source} already fills {disk}")),
        });
    }
    let grown = context.host.probe(
        &Invocation::new("growpart", [disk.as_str(), number]),
        GROWPART_NOCHANGE,
    )?;
    // Also after NOCHANGE: a run stopped between the two commands grows the file
    // system now; resize2fs does nothing when there is nothing to do.
    context
        .host
        .run(&Invocation::new("resize2fs", [source.as_str()]).with_timeout(LONG_COMMAND_SECONDS))?;
    Ok(match grown {
        Some(_) => Outcome::changed(format!(
            "grew {source} (partition {number} of {disk}) and its ext4 to the end of the disk"
        )),
        None => Outcome::unchanged(format!("{source} already fills {disk}")),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::agent::config::Config;
    use crate::agent::host::ScriptedHost;
    use crate::agent::testing::FakeRoot;

    const FINDMNT: &str = "findmnt --noheadings --output SOURCE,FSTYPE,FSROOT /";

    fn run(host: &mut ScriptedHost) -> anyhow::Result<Outcome> {
        let fake = FakeRoot::db();
        let config = Config::load(&fake.root).unwrap();
        let node = config.cluster.node("db1").unwrap().clone();
        let mut context = Context::new(&fake.root, host, &config, &node);
        ensure_root_grown(&mut context)
    }

    #[test]
    fn a_root_partition_grows_once() {
        let mut host = ScriptedHost::new(true);
        host.answer(FINDMNT, "/dev/vda3 ext4 /\n")
            .answer(
                "lsblk --nodeps --noheadings --output PKNAME,PARTN /dev/vda3",
                "vda 3\n",
            )
            .answer("growpart /dev/vda 3", "CHANGED: partition=3\n")
            .succeed("resize2fs /dev/vda3");
        let outcome = run(&mut host).unwrap();
        assert!(outcome.changed, "{outcome:?}");
        assert!(outcome.detail.contains("grew /dev/vda3"), "{outcome:?}");
        host.forget("growpart /dev/vda 3")
            .absent("growpart /dev/vda 3");
        let again = run(&mut host).unwrap();
        assert!(!again.changed, "{again:?}");
        assert!(
            host.log()
                .iter()
                .filter(|line| line.as_str() == "resize2fs /dev/vda3")
                .count()
                == 2,
            "resize2fs runs each time: {:?}",
            host.log()
        );
    }

    #[test]
    fn live_and_container_roots_are_left_alone() {
        let mut host = ScriptedHost::new(true);
        host.answer(FINDMNT, "r2a-live overlay /\n");
        let outcome = run(&mut host).unwrap();
        assert!(!outcome.changed);
        assert!(outcome.detail.contains("overlay"), "{outcome:?}");
        let mut container = ScriptedHost::new(true);
        container.answer(FINDMNT, "/dev/vda1[/srv/tree] ext4 /srv/tree\n");
        let outcome = run(&mut container).unwrap();
        assert!(
            outcome.detail.contains("the folder /srv/tree"),
            "{outcome:?}"
        );
        for host in [host, container] {
            assert!(!host.log().iter().any(|line| line.starts_with("lsblk")));
        }
    }

    #[test]
    fn a_failed_resize_is_an_error() {
        let mut host = ScriptedHost::new(true);
        host.answer(FINDMNT, "/dev/sda2 ext4 /\n")
            .answer(
                "lsblk --nodeps --noheadings --output PKNAME,PARTN /dev/sda2",
                "sda 2\n",
            )
            .absent("growpart /dev/sda 2")
            .fail("resize2fs /dev/sda2", "resize2fs: Bad magic number");
        let error = run(&mut host).unwrap_err();
        assert!(
            format!("{error:#}").contains("Bad magic number"),
            "{error:#}"
        );
    }
}
