//! The fidelity tree: every kind of file, name, mode, time and attribute a
//! restore must bring back exactly. Shared by the local and remote end-to-end tests.

use std::collections::HashMap;
use std::fs::{self, File};
use std::os::unix::fs::{FileExt, symlink};
use std::path::Path;

use super::*;

/// 1990-05-17T12:34:56.123456789Z
pub const T1990: (i64, i64) = (642_947_696, 123_456_789);
/// 2038-06-01T08:00:00.987654321Z (after the 32-bit rollover)
pub const T2038: (i64, i64) = (2_158_992_000, 987_654_321);

pub const LONG_NAME_LEN: usize = 255;
pub const SPARSE_SIZE: u64 = 1 << 30;

/// Sets a distinct nanosecond mtime on every entry below `root` (children before
/// their directory, so directory times stick), with `special` overrides by name.
pub fn stamp_tree(root: &Path, special: &HashMap<Vec<u8>, (i64, i64)>, counter: &mut i64) {
    use std::os::unix::ffi::OsStrExt;
    let m = fs::symlink_metadata(root).unwrap();
    if m.is_dir() {
        let mut names: Vec<_> = fs::read_dir(root).unwrap().map(|e| e.unwrap().file_name()).collect();
        names.sort();
        for n in names {
            stamp_tree(&root.join(n), special, counter);
        }
    }
    *counter += 1;
    let name = root.file_name().unwrap().as_bytes().to_vec();
    let (sec, nsec) = special
        .get(&name)
        .copied()
        .unwrap_or((1_500_000_000 + *counter * 3_613, (*counter * 7_919_113) % 1_000_000_000));
    set_mtime(root, sec, nsec);
}

/// Builds the tree for the fidelity test under `src` (which must not exist).
pub fn build_fidelity_tree(src: &Path) {
    use nix::sys::stat::{Mode, SFlag, makedev, mknod};
    use std::os::unix::fs::lchown;

    fs::create_dir_all(src.join("empty_dir")).unwrap();
    fs::create_dir_all(src.join("nested/a/b/c")).unwrap();
    fs::create_dir_all(src.join("nested/a/empty")).unwrap();
    write(src.join("nested/a/b/c/deep.txt"), "deep\n");
    write(src.join("nested/top.txt"), "nested top\n");

    // Sizes: empty, one byte, larger than the maximum chunk (1 MiB here).
    write(src.join("empty_file"), "");
    write(src.join("one_byte"), "x");
    write(src.join("big.bin"), Rng::new(1).bytes(3 << 20));

    // 1 GiB sparse file with two small islands of data.
    {
        let f = File::create(src.join("sparse.img")).unwrap();
        f.set_len(SPARSE_SIZE).unwrap();
        f.write_all_at(b"island one: a few bytes", 3 * 4096 + 17).unwrap();
        f.write_all_at(&Rng::new(2).bytes(10_000), 700 << 20).unwrap();
    }

    // Awkward names.
    write(src.join(os(b"caf\xe9")), "latin-1 name\n");
    write(src.join("new\nline"), "name with a newline\n");
    write(src.join("a".repeat(LONG_NAME_LEN)), "255-byte name\n");
    write(src.join(" leading space"), "space\n");
    write(src.join(os(b"dir\xff\xfe/inner\x80")), "non-UTF-8 directory\n");

    // Symlinks: relative, absolute, dangling, to a non-UTF-8 name.
    fs::create_dir(src.join("links")).unwrap();
    symlink("../one_byte", src.join("links/rel")).unwrap();
    symlink(src.join("one_byte"), src.join("links/abs")).unwrap();
    symlink("does/not/exist", src.join("links/dangling")).unwrap();
    symlink(os(b"../caf\xe9"), src.join("links/nonutf8")).unwrap();

    // A hard-link group of three names, one in another directory.
    write(src.join("hard1"), "hard-linked content\n");
    fs::create_dir(src.join("hsub")).unwrap();
    fs::hard_link(src.join("hard1"), src.join("hard2")).unwrap();
    fs::hard_link(src.join("hard1"), src.join("hsub/hard3")).unwrap();

    // A fifo and a socket.
    nix::unistd::mkfifo(&src.join("fifo"), Mode::from_bits_truncate(0o640)).unwrap();
    chmod(&src.join("fifo"), 0o640);
    drop(std::os::unix::net::UnixListener::bind(src.join("sock")).unwrap());

    // Extended attributes on a file and a directory.
    write(src.join("xattr_file"), "has xattrs\n");
    xattr::set(src.join("xattr_file"), "user.comment", b"hello").unwrap();
    xattr::set(src.join("xattr_file"), "user.binary", &[0u8, 255, 1, 2]).unwrap();
    xattr::set(src.join("xattr_file"), "user.empty", b"").unwrap();
    xattr::set(src.join("xattr_file"), os(b"user.caf\xe9"), b"\xff\xfe").unwrap();
    fs::create_dir(src.join("xattr_dir")).unwrap();
    xattr::set(src.join("xattr_dir"), "user.dir", b"d").unwrap();

    // Times outside the 32-bit range and long ago.
    write(src.join("old1990"), "from 1990\n");
    write(src.join("future2038"), "from 2038\n");

    // Owners and device nodes (root only). chown before chmod: chown clears setuid.
    if is_root() {
        write(src.join("owned_file"), "foreign owner\n");
        lchown(src.join("owned_file"), Some(1234), Some(5678)).unwrap();
        fs::create_dir(src.join("owned_dir")).unwrap();
        write(src.join("owned_dir/inner"), "inside\n");
        lchown(src.join("owned_dir"), Some(1234), Some(5678)).unwrap();
        symlink("owned_file", src.join("owned_link")).unwrap();
        lchown(src.join("owned_link"), Some(4321), Some(8765)).unwrap();
        mknod(&src.join("null_dev"), SFlag::S_IFCHR, Mode::from_bits_truncate(0o640), makedev(1, 3)).unwrap();
        chmod(&src.join("null_dev"), 0o640);
        lchown(src.join("null_dev"), Some(1234), Some(5678)).unwrap();
    }

    // Special modes.
    write(src.join("setuid"), "#!/bin/sh\n");
    chmod(&src.join("setuid"), 0o4755);
    write(src.join("setgid"), "#!/bin/sh\n");
    chmod(&src.join("setgid"), 0o2711);
    if is_root() {
        // Without root the owner cannot read it either (the backup would skip it).
        write(src.join("mode000"), "no permissions\n");
        chmod(&src.join("mode000"), 0o000);
    }
    fs::create_dir(src.join("sticky_dir")).unwrap();
    chmod(&src.join("sticky_dir"), 0o1777);
    fs::create_dir(src.join("setgid_dir")).unwrap();
    chmod(&src.join("setgid_dir"), 0o2750);
    fs::create_dir(src.join("readonly_dir")).unwrap();
    write(src.join("readonly_dir/inside"), "in a read-only dir\n");
    chmod(&src.join("readonly_dir/inside"), 0o444);
    chmod(&src.join("readonly_dir"), 0o555);

    let special: HashMap<Vec<u8>, (i64, i64)> =
        [(b"old1990".to_vec(), T1990), (b"future2038".to_vec(), T2038)].into_iter().collect();
    stamp_tree(src, &special, &mut 0);
}
