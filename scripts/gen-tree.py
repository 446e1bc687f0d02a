#!/usr/bin/env python3
"""Deterministic test-tree generator for scripts/bench.

Builds a directory tree from a seeded PRNG (no downloads), so the same
(kind, scale, seed) always gives byte-identical file contents, names and
mtimes.  Data sets:

  mixed   ~1 GiB and ~30k files at scale 1.0 (sizes and counts scale
          linearly): many small text-like files (log-normal sizes, median
          ~3 KiB) in nested directories, shared-library-like
          semi-compressible binaries, a few large files (incompressible
          "media", a semi-compressible sparse-ish disk image, a text log),
          a near-duplicate of the disk image (a few 64 KiB regions changed),
          exact duplicates of ~2% of the small files, some empty files,
          empty directories and relative symlinks.
          (scale 2.7: ~2.7 GiB, ~100k files, the size of the reference tree in
          docs/performance.md.)
  small   only small text-like files (per-file overhead), ~100k files/GiB.
  large   a few large files only (raw throughput: chunking, hashing,
          compression, encryption).
  sparse  one sparse-ish 10 GiB file at scale 1 (a thin-provisioned VM disk):
          ~12% of it written in extents of 64 KiB-8 MiB (zeroed, code-like,
          text and random), the rest holes.
  tiny    1 million empty or tiny (< 200 bytes) files at scale 1, 1,000 per
          directory (per-file cost at scale; memory that must not grow with
          the file count).

Usage: gen-tree.py [--kind mixed] [--scale 1.0] [--seed 42] DEST
DEST must not exist; it is written under DEST.tmp and renamed on success.
A summary (files, bytes, ...) is printed as JSON on stdout.
"""

import argparse
import json
import math
import os
import random
import shutil
import sys

MiB = 1 << 20
KiB = 1 << 10
EPOCH = 1_700_000_000  # fixed mtime base: 2023-11-14


class Gen:
    def __init__(self, root, seed):
        self.root = root
        self.rng = random.Random(seed)
        self.files = 0
        self.bytes = 0
        self.symlinks = 0
        self.dirs_made = set()
        self.written = []  # (relpath, size, kind) of regular files written
        self._corpus = None

    # ---------- primitives ----------
    def randbytes(self, n):
        r = self.rng
        if n <= 4 * MiB:
            return r.randbytes(n)
        parts = [r.randbytes(MiB) for _ in range(n // MiB)]
        parts.append(r.randbytes(n % MiB))
        return b"".join(parts)

    def word(self):
        r = self.rng
        n = r.choice((2, 3, 3, 4, 4, 5, 5, 6, 7, 8, 9, 11))
        return "".join(r.choice("abcdefghijklmnopqrstuvwxyz_") for _ in range(n))

    def corpus(self):
        """~16 MiB of text-like material (prose / config / source code look)."""
        if self._corpus is not None:
            return self._corpus
        r = self.rng
        vocab = [self.word() for _ in range(6000)]
        weights = [1.0 / (i + 1) ** 1.05 for i in range(len(vocab))]  # Zipf-like
        syms = ["{", "}", "(", ")", ";", "=", "==", "->", "+", ",", ".", ":", "\"", "0", "1", "42",
                "return", "if", "else", "for", "fn", "let", "def", "import", "const", "#", "//"]
        out = []
        total = 0
        target = 16 * MiB
        while total < target:
            words = r.choices(vocab, weights, k=4096)
            pieces = r.choices(syms, k=1024)
            line = []
            lines = []
            wi = pi = 0
            indent = 0
            while wi < len(words):
                k = r.randint(3, 12)
                toks = words[wi:wi + k]
                wi += k
                if r.random() < 0.5 and pi < len(pieces) - 3:
                    toks.insert(r.randrange(len(toks) + 1), pieces[pi])
                    toks.append(pieces[pi + 1])
                    pi += 2
                indent = max(0, min(6, indent + r.choice((-1, 0, 0, 0, 1))))
                lines.append("    " * indent + " ".join(toks))
            chunk = ("\n".join(lines) + "\n").encode()
            out.append(chunk)
            total += len(chunk)
        self._corpus = b"".join(out)
        return self._corpus

    def text(self, n, tag):
        c = self.corpus()
        head = f"# {tag} {self.rng.getrandbits(64):016x}\n".encode()
        if n <= len(head):
            return head[:n]
        n -= len(head)
        parts = [head]
        while n > 0:
            take = min(n, len(c) // 4)
            off = self.rng.randrange(0, len(c) - take)
            parts.append(c[off:off + take])
            n -= take
        return b"".join(parts)

    def lowentropy(self, n):
        """Machine-code-like bytes: ~4 bits/byte, compresses to about half."""
        r = self.rng
        table = bytearray(256)
        for i in range(256):
            table[i] = 0 if i < 128 else r.randrange(256)
        return self.randbytes(n).translate(bytes(table))

    def binary(self, n):
        """Shared-library-like: mix of code-ish, zero padding, string tables, random."""
        r = self.rng
        parts = []
        left = n
        while left > 0:
            k = min(left, r.randint(1 * KiB, 64 * KiB))
            x = r.random()
            if x < 0.50:
                parts.append(self.lowentropy(k))
            elif x < 0.62:
                parts.append(bytes(k))
            elif x < 0.82:
                parts.append(self.text(k, "strtab"))
            else:
                parts.append(self.randbytes(k))
            left -= k
        return b"".join(parts)

    def logtext(self, n):
        r = self.rng
        levels = ("INFO", "INFO", "INFO", "DEBUG", "WARN", "ERROR")
        comps = [self.word() for _ in range(40)]
        msgs = [" ".join(self.word() for _ in range(r.randint(3, 9))) for _ in range(400)]
        out = []
        total = 0
        t = EPOCH
        seq = 0
        while total < n:
            batch = []
            for _ in range(2000):
                t += r.randint(0, 3)
                seq += 1
                s = (f"2023-11-{14 + t // 86400 % 14:02d} {t // 3600 % 24:02d}:{t // 60 % 60:02d}:"
                     f"{t % 60:02d}.{r.randrange(1000):03d} {r.choice(levels)} [{r.choice(comps)}] "
                     f"req={seq:x} id={r.getrandbits(32):08x} {r.choice(msgs)} took={r.randint(1, 5000)}ms\n")
                batch.append(s)
            chunk = "".join(batch).encode()
            out.append(chunk)
            total += len(chunk)
        return b"".join(out)[:n]

    # ---------- tree ----------
    def mkdirs(self, rel):
        if rel not in self.dirs_made:
            os.makedirs(os.path.join(self.root, rel), exist_ok=True)
            while rel and rel not in self.dirs_made:
                self.dirs_made.add(rel)
                rel = os.path.dirname(rel)

    def write(self, rel, data, kind):
        d = os.path.dirname(rel)
        if d:
            self.mkdirs(d)
        p = os.path.join(self.root, rel)
        with open(p, "wb") as f:
            f.write(data)
        mt = EPOCH + self.rng.randrange(0, 200 * 86400)
        os.utime(p, (mt, mt))
        self.files += 1
        self.bytes += len(data)
        self.written.append((rel, len(data), kind))

    def make_dirs(self, n, top):
        """A random nested directory structure: list of relative dir paths."""
        r = self.rng
        dirs = list(top)
        depth = {d: d.count("/") + 1 for d in dirs}
        for _ in range(n):
            parent = r.choice(dirs)
            if depth[parent] >= 7:
                parent = r.choice(top)
            d = f"{parent}/{self.word()}{r.randrange(100)}"
            if d in depth:
                continue
            dirs.append(d)
            depth[d] = depth[parent] + 1
        return dirs

    def lognormal_size(self, median, sigma, lo, hi):
        return int(min(hi, max(lo, self.rng.lognormvariate(math.log(median), sigma))))

    def small_text_files(self, count, dirs):
        r = self.rng
        exts = (".txt", ".md", ".rs", ".py", ".c", ".h", ".json", ".yaml", ".html", ".conf", "")
        for i in range(count):
            d = r.choice(dirs)
            if r.random() < 0.01:
                size = 0
            else:
                size = self.lognormal_size(3 * KiB, 1.2, 16, 1 * MiB)
            self.write(f"{d}/{self.word()}-{i}{r.choice(exts)}", self.text(size, f"file{i}"), "text")

    def binary_files(self, count, dirs):
        r = self.rng
        for i in range(count):
            d = r.choice(dirs)
            size = self.lognormal_size(48 * KiB, 1.3, 4 * KiB, 16 * MiB)
            name = r.choice((f"lib{self.word()}.so.{r.randint(0, 9)}", f"{self.word()}.bin",
                             f"{self.word()}.o", f"{self.word()}.pyc", f"{self.word()}.jar"))
            self.write(f"{d}/{i}-{name}", self.binary(size), "binary")

    def duplicates(self, count, dirs):
        r = self.rng
        cands = [w for w in self.written if w[2] in ("text", "binary")]
        for i in range(count):
            src, _, kind = r.choice(cands)
            d = r.choice(dirs)
            rel = f"{d}/copy{i}-{os.path.basename(src)}"
            with open(os.path.join(self.root, src), "rb") as f:
                data = f.read()
            self.write(rel, data, "dup")

    def symlinks_and_empty_dirs(self, nlinks, nempty, dirs):
        r = self.rng
        targets = [w[0] for w in self.written]
        for i in range(nlinks):
            t = r.choice(targets)
            d = r.choice(dirs)
            self.mkdirs(d)
            link = os.path.join(self.root, d, f"link{i}")
            os.symlink(os.path.relpath(os.path.join(self.root, t), os.path.join(self.root, d)), link)
            os.utime(link, (EPOCH, EPOCH), follow_symlinks=False)
            self.symlinks += 1
        for i in range(nempty):
            self.mkdirs(f"{r.choice(dirs)}/empty{i}")

    def fix_dir_mtimes(self):
        all_dirs = sorted(self.dirs_made, key=lambda d: (-d.count("/"), d))
        for i, d in enumerate(all_dirs):
            mt = EPOCH + 200 * 86400 + i
            os.utime(os.path.join(self.root, d), (mt, mt))


def gen_mixed(g, scale):
    s = scale
    dirs_text = g.make_dirs(max(3, int(1500 * s)), ["home/user/docs", "home/user/src", "etc", "usr/share", "srv/www"])
    dirs_bin = g.make_dirs(max(2, int(150 * s)), ["usr/lib", "opt/app/lib", "home/user/.cache"])
    g.small_text_files(max(10, int(33500 * s)), dirs_text)
    g.binary_files(max(4, int(2400 * s)), dirs_bin)
    # Large files.
    g.write("srv/media/recording.mkv", g.randbytes(int(160 * MiB * s)), "large-random")
    disk = bytearray()
    left = int(160 * MiB * s)
    while left > 0:
        k = min(left, g.rng.randint(64 * KiB, 4 * MiB))
        x = g.rng.random()
        if x < 0.35:
            disk += bytes(k)
        elif x < 0.75:
            disk += g.lowentropy(k)
        elif x < 0.85:
            disk += g.text(k, "disk")
        else:
            disk += g.randbytes(k)
        left -= k
    g.write("srv/vm/disk.img", bytes(disk), "large-disk")
    g.write("var/log/app/app.log", g.logtext(int(96 * MiB * s)), "large-log")
    # Near-duplicate of the disk image: a few scattered 64 KiB regions rewritten.
    nmod = max(1, int(24 * s))
    for _ in range(nmod):
        off = g.rng.randrange(0, max(1, len(disk) - 64 * KiB))
        disk[off:off + 64 * KiB] = g.randbytes(min(64 * KiB, len(disk) - off))
    g.write("srv/vm/disk-snapshot.img", bytes(disk), "large-neardup")
    del disk
    g.duplicates(max(2, int(600 * s)), dirs_text + dirs_bin)
    g.symlinks_and_empty_dirs(max(1, int(200 * s)), max(1, int(20 * s)), dirs_text)


def gen_small(g, scale):
    dirs = g.make_dirs(max(3, int(5000 * scale)), ["src", "docs", "etc"])
    # Median 3 KiB, mean ~6 KiB text files: ~170k files per GiB.
    g.small_text_files(max(10, int(170000 * scale)), dirs)


def gen_large(g, scale):
    n = int(1024 * MiB * scale)
    g.write("random.bin", g.randbytes(n // 2), "large-random")
    g.write("lowentropy.bin", g.lowentropy(n // 4), "large-disk")
    g.write("app.log", g.logtext(n // 4), "large-log")


def gen_sparse(g, scale):
    size = int(10 * 1024 * MiB * scale)
    path = os.path.join(g.root, "vm", "disk.qcow-raw")
    g.mkdirs("vm")
    r = g.rng
    written = 0
    with open(path, "wb") as f:
        f.truncate(size)
        off = 0
        while off < size:
            off += r.randint(1, 16) * 4 * MiB  # a hole
            k = min(size - off, r.randint(1, 128) * 64 * KiB)
            if k <= 0:
                break
            x = r.random()
            data = bytes(k) if x < 0.1 else g.lowentropy(k) if x < 0.6 else g.text(k, "v") if x < 0.8 else g.randbytes(k)
            f.seek(off)
            f.write(data)
            written += k
            off += k
    mt = EPOCH
    os.utime(path, (mt, mt))
    g.files += 1
    g.bytes += size
    g.written.append(("vm/disk.qcow-raw", size, f"sparse ({written // MiB} MiB written)"))


def gen_tiny(g, scale):
    n = max(10, int(1_000_000 * scale))
    r = g.rng
    for i in range(n):
        d = f"d{i // 1000:04}"
        if i % 1000 == 0:
            g.mkdirs(d)
        size = 0 if r.random() < 0.3 else r.randint(1, 199)
        data = r.randbytes(size) if r.random() < 0.5 else (b"x%d\n" % i * size)[:size]
        rel = f"{d}/f{i:07}"
        with open(os.path.join(g.root, rel), "wb") as f:
            f.write(data)
        g.files += 1
        g.bytes += size
        g.written.append((rel, size, "tiny"))


KINDS = {"mixed": gen_mixed, "small": gen_small, "large": gen_large, "sparse": gen_sparse, "tiny": gen_tiny}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--kind", choices=sorted(KINDS), default="mixed")
    ap.add_argument("--scale", type=float, default=1.0, help="1.0 = ~1 GiB")
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("dest")
    a = ap.parse_args()
    if os.path.exists(a.dest):
        sys.exit(f"gen-tree: {a.dest} exists")
    tmp = a.dest + ".tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    os.makedirs(tmp)
    g = Gen(tmp, a.seed * 1000003 + sorted(KINDS).index(a.kind))
    KINDS[a.kind](g, a.scale)
    g.fix_dir_mtimes()
    os.utime(tmp, (EPOCH, EPOCH))
    os.rename(tmp, a.dest)
    by_kind = {}
    for _, size, kind in g.written:
        k = by_kind.setdefault(kind, [0, 0])
        k[0] += 1
        k[1] += size
    print(json.dumps({"kind": a.kind, "scale": a.scale, "seed": a.seed, "files": g.files,
                      "bytes": g.bytes, "symlinks": g.symlinks, "dirs": len(g.dirs_made),
                      "by_kind": {k: {"files": v[0], "bytes": v[1]} for k, v in sorted(by_kind.items())}}))


if __name__ == "__main__":
    main()
