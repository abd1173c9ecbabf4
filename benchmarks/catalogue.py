"""A catalogue of distinct recordings to measure fpstore at scale (issue 25).

Renders recordings from the symbolic music music21 ships (Essen folk songs, O'Neill's and Ryan's
collections, Palestrina, Bach, Monteverdi, the Trecento, ...) with Debian's ``fluidsynth`` and a General
MIDI soundfont. Each *rendition* of a piece draws from a generator seeded by (SEED, piece, rendition):

- tempo (quarter notes per minute) and transposition (every rendition of a piece in another key);
- a General MIDI program per voice, the voices' loudness and a few ms of timing jitter;
- an accompaniment: a bass line (the lowest voice's note on each beat, two octaves down), a pad (the bar's
  chord held), drums (one of a few patterns), each present or not;
- a length of 30-60 s (the piece is looped when shorter, each pass in another key with some voices on
  other instruments), reverb on or off.

So two renditions of one piece differ in key and tempo and share no fingerprints beyond chance. About 5 %
of the renditions are *negatives*: never to be stored, they give the queries that must name nothing.

Layout under ``--out`` (default ``../corpus/catalogue`` next to the repository, never in git)::

    pieces/<source>.json      the notes of each parsed source file (cache: music21 parsing is slow)
    audio/<NNN>/cNNNNNN.flac  22,050 Hz mono FLAC renditions, 1,000 per folder
    renditions.csv            id,file,in_db,piece,source,rendition,bpm,transpose,programs,accompaniment,duration_s
    queries/                  excerpts (``queries`` stage): qNNNNNN.wav|mp3 and queries.csv

Every stage is resumable: a rendition whose file exists is not rendered again, and the CSV is rewritten
from the deterministic plan, so an interrupted build continues where it stopped and gives the same files.

Usage::

    nice -n 15 python benchmarks/catalogue.py render --count 10500     # ~5 % of them negatives
    python benchmarks/catalogue.py queries --positives 500              # excerpts of stored + all negatives
    python benchmarks/catalogue.py status

Needs ``music21`` (``pip install -e '.[bench]'``), ``fluidsynth``, ``fluid-soundfont-gm`` and ffmpeg.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import soundfile as sf

SEED = 20261207
SR = 22050
RENDITIONS_PER_PIECE = 3
NEGATIVE_SHARE = 0.05
SOUNDFONT = "/usr/share/sounds/sf2/FluidR3_GM.sf2"
HERE = Path(__file__).resolve().parent
# ../corpus/catalogue next to the repository (/work/main), or next to the worktrees' folder (/work/wt/NAME).
DEFAULT_OUT = next((p / "corpus" / "catalogue" for p in (HERE.parent.parent, HERE.parent.parent.parent)
                    if (p / "corpus").is_dir()), HERE.parent.parent / "corpus" / "catalogue")

# Source folders of music21's corpus and their share of the pieces: every prefix of the catalogue mixes
# styles (folk monophony, polyphony, chorales) and the slow-to-parse scores (Bach) stay a small share.
SOURCES = {"essenFolksong": 4.0, "oneills1850": 2.0, "palestrina": 1.0, "ryansMammoth": 1.0, "bach": 0.25,
           "monteverdi": 0.1, "trecento": 0.1}
# General MIDI programs (0-based) that sound like a melody instrument; drawn per voice.
MELODIC = [0, 1, 4, 6, 11, 16, 19, 21, 22, 24, 25, 26, 40, 41, 42, 46, 48, 52, 56, 57, 60, 64, 65, 68, 69, 70, 71,
           73, 74, 75, 78, 80, 81]
BASS = [32, 33, 34, 35, 38, 42, 43, 58, 70]
PAD = [48, 49, 50, 52, 88, 89, 90, 91, 94, 19]
# Drum patterns: (position in a 4-quarter bar in quarters, GM drum note).
DRUMS = [
    [(0, 36), (1, 38), (2, 36), (3, 38)] + [(i / 2, 42) for i in range(8)],
    [(0, 36), (1.5, 36), (2, 36), (1, 38), (3, 38)] + [(i, 51) for i in range(4)],
    [(i / 2, 70) for i in range(8)] + [(0, 36), (2, 36)],
    [(0, 36), (1, 42), (2, 42), (3, 36)] + [(2.5, 39)],
]


# --- pieces ------------------------------------------------------------------------------------------


def source_files() -> dict[str, list[Path]]:
    """music21 corpus files of each of SOURCES, sorted."""
    from music21 import corpus

    by_source: dict[str, list[Path]] = {s: [] for s in SOURCES}
    for p in corpus.getPaths():
        if p.parent.name in by_source and p.suffix in (".abc", ".krn", ".mxl", ".xml", ".musicxml"):
            by_source[p.parent.name].append(Path(p))
    return {s: sorted(v) for s, v in by_source.items()}


def score_notes(score: object) -> list[list[list[float]]]:
    """Voices of a music21 score as [[onset_quarters, duration_quarters, midi_pitch], ...] lists."""
    voices = []
    parts = list(score.parts) or [score]  # type: ignore[attr-defined]
    for part in parts:
        notes = []
        for n in part.flatten().notes:
            off, dur = float(n.offset), float(n.quarterLength)
            if dur <= 0:
                continue
            for p in n.pitches:
                notes.append([round(off, 4), round(dur, 4), int(p.midi)])
        if notes:
            voices.append(notes)
    return voices


def parse_source(path: Path, cache: Path) -> list[dict]:
    """Pieces of one music21 file (an opus gives many), cached as JSON."""
    out = cache / (path.parent.name + "__" + path.stem + ".json")
    if out.exists():
        return json.loads(out.read_text())
    from music21 import converter

    pieces = []
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            parsed = converter.parse(path)
            scores = list(parsed.scores) if type(parsed).__name__ == "Opus" else [parsed]
            for k, s in enumerate(scores):
                voices = score_notes(s)
                if sum(len(v) for v in voices) >= 12:
                    pieces.append({"source": f"{path.parent.name}/{path.name}#{k}", "voices": voices})
    except Exception as exc:  # music21 raises many kinds on odd files: skip the file, say so
        print(f"{path.name}: skipped ({type(exc).__name__}: {str(exc)[:80]})", file=sys.stderr)
    tmp = out.with_suffix(".tmp")
    tmp.write_text(json.dumps(pieces, separators=(",", ":")))
    tmp.replace(out)
    return pieces


def iter_pieces(cache: Path):
    """All pieces, sources interleaved by their SOURCES share (fixed order), parsing lazily."""
    streams = {s: (p for f in files for p in parse_source(f, cache)) for s, files in source_files().items()}
    r = 0
    while streams:
        for s in list(streams):
            w = SOURCES[s]
            for _ in range(math.floor((r + 1) * w) - math.floor(r * w)):
                piece = next(streams[s], None)
                if piece is None:
                    del streams[s]
                    break
                yield piece
        r += 1


# --- one rendition -----------------------------------------------------------------------------------


class Synth:
    """libfluidsynth in this process (ctypes): the soundfont is loaded once, not once per rendition."""

    def __init__(self, soundfont: str = SOUNDFONT) -> None:
        import ctypes

        lib = ctypes.CDLL("libfluidsynth.so.3")
        lib.new_fluid_settings.restype = ctypes.c_void_p
        lib.new_fluid_synth.restype = ctypes.c_void_p
        lib.new_fluid_synth.argtypes = [ctypes.c_void_p]
        lib.fluid_settings_setnum.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_double]
        lib.fluid_settings_setint.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_int]
        for name in ("fluid_synth_noteon", "fluid_synth_noteoff", "fluid_synth_program_change",
                     "fluid_synth_reverb_on", "fluid_synth_all_sounds_off", "fluid_synth_system_reset",
                     "fluid_synth_sfload", "fluid_synth_write_float"):
            getattr(lib, name).argtypes = None
        settings = lib.new_fluid_settings()
        lib.fluid_settings_setnum(settings, b"synth.sample-rate", float(SR))
        lib.fluid_settings_setnum(settings, b"synth.gain", 0.5)
        lib.fluid_settings_setint(settings, b"synth.chorus.active", 0)
        self.lib, self.ctypes = lib, ctypes
        self.synth = ctypes.c_void_p(lib.new_fluid_synth(settings))
        if lib.fluid_synth_sfload(self.synth, soundfont.encode(), 1) < 0:
            raise RuntimeError(f"{soundfont}: fluidsynth cannot load it")

    def _write(self, n: int, left: np.ndarray, right: np.ndarray, at: int) -> None:
        c = self.ctypes
        ptr = c.POINTER(c.c_float)
        self.lib.fluid_synth_write_float(self.synth, c.c_int(n), left.ctypes.data_as(ptr), c.c_int(at), c.c_int(1),
                                         right.ctypes.data_as(ptr), c.c_int(at), c.c_int(1))

    def render(self, events: list[tuple[float, int, int, int, int]], seconds: float, reverb: bool) -> np.ndarray:
        """Mono float32 samples of (time_s, kind 0=program 1=off 2=on, channel, a, b) events (sorted here)."""
        c, lib, synth = self.ctypes, self.lib, self.synth
        lib.fluid_synth_system_reset(synth)
        lib.fluid_synth_reverb_on(synth, c.c_int(-1), c.c_int(int(reverb)))
        total = int(seconds * SR)
        left, right = np.zeros(total, np.float32), np.zeros(total, np.float32)
        pos = 0
        for when, kind, ch, a, b in sorted(events):
            at = min(total, int(when * SR))
            while pos < at:  # fluidsynth writes at most 8192 frames per call
                n = min(at - pos, 8192)
                self._write(n, left, right, pos)
                pos += n
            if kind == 0:
                lib.fluid_synth_program_change(synth, c.c_int(ch), c.c_int(a))
            elif kind == 1:
                lib.fluid_synth_noteoff(synth, c.c_int(ch), c.c_int(a))
            else:
                lib.fluid_synth_noteon(synth, c.c_int(ch), c.c_int(a), c.c_int(b))
        while pos < total:
            n = min(total - pos, 8192)
            self._write(n, left, right, pos)
            pos += n
        lib.fluid_synth_all_sounds_off(synth, c.c_int(-1))
        return 0.5 * (left + right)


def plan_rendition(piece: dict, piece_no: int, rendition: int) -> dict:
    """The seeded draws of one rendition (pure: same arguments, same recording)."""
    rng = np.random.default_rng([SEED, piece_no, rendition])
    keys = np.random.default_rng([SEED, piece_no]).permutation(np.arange(-6, 6))
    n_voices = min(len(piece["voices"]), 6)
    return {
        "bpm": float(rng.uniform(66, 150)),
        "transpose": int(keys[rendition % 12]),
        "programs": [int(p) for p in rng.choice(MELODIC, size=n_voices)],
        "velocity": [int(v) for v in rng.integers(60, 110, size=n_voices)],
        "bass": int(rng.choice(BASS)) if rng.random() < 0.6 else -1,
        "pad": int(rng.choice(PAD)) if rng.random() < 0.45 else -1,
        "drums": int(rng.integers(len(DRUMS))) if rng.random() < 0.5 else -1,
        "duration_s": float(rng.uniform(30, 60)),
        "reverb": bool(rng.random() < 0.5),
        "jitter_seed": int(rng.integers(2**31)),
        "negative": bool(rng.random() < NEGATIVE_SHARE),
    }


def sounding(voices: list[np.ndarray], t: float) -> np.ndarray:
    """Pitches sounding at quarter t."""
    return np.concatenate([v[(v[:, 0] <= t) & (v[:, 0] + v[:, 1] > t), 2] for v in voices])


def rendition_events(piece: dict, plan: dict) -> list[tuple[float, int, int, int, int]]:
    """Synth events of a rendition (seconds, kind, channel, a, b): the looped voices, the accompaniment."""
    rng = np.random.default_rng(plan["jitter_seed"])
    voices = [np.asarray(v, dtype=float) for v in piece["voices"][:6]]
    length_q = max(float(np.max(v[:, 0] + v[:, 1])) for v in voices)
    length_q = max(4.0, math.ceil(length_q))
    total_q = plan["duration_s"] * plan["bpm"] / 60.0
    loops = math.ceil(total_q / length_q)
    # Each pass of a looped piece is another verse: moved to another key, some voices on other instruments
    # (an exact loop would repeat every hash of the pass, which real recordings seldom do).
    shifts = [0] + [int(m) for m in rng.choice([-5, -4, -3, -2, 2, 3, 4, 5, 7], size=loops - 1)]
    voices = [np.concatenate([v + [k * length_q, 0, shifts[k]] for k in range(loops)]) for v in voices]
    tr = plan["transpose"]
    spq = 60.0 / plan["bpm"]  # seconds per quarter
    events: list[tuple[float, int, int, int, int]] = []

    def note(ch: int, on_q: float, dur_q: float, pitch: int, vel: int) -> None:
        if on_q >= total_q:
            return
        pitch = int(min(108, max(21, pitch)))
        jit = float(rng.normal(0, 0.012))
        a = max(0.0, on_q * spq + jit)
        b = max(a + 0.02, min(on_q + dur_q, total_q) * spq + jit)
        vel = int(min(127, max(20, vel + rng.integers(-8, 9))))
        events.append((a, 2, ch, pitch, vel))
        events.append((b, 1, ch, pitch, 0))

    for ch, (v, prog, vel) in enumerate(zip(voices, plan["programs"], plan["velocity"])):
        events.append((0.0, 0, ch, prog, 0))
        for k in range(1, loops):
            if rng.random() < 0.5:
                events.append((k * length_q * spq, 0, ch, int(rng.choice(MELODIC)), 0))
        for on, dur, p in v:
            note(ch, on, dur, int(p) + tr, vel)
    n_beats = int(total_q)
    if plan["bass"] >= 0:
        events.append((0.0, 0, 6, plan["bass"], 0))
        for b in range(n_beats):
            s = sounding(voices, b + 1e-3)
            if len(s):
                low = int(s.min()) + tr
                note(6, b, 0.9, 36 + (low - 36) % 12, 90)
    if plan["pad"] >= 0:
        events.append((0.0, 0, 7, plan["pad"], 0))
        for bar in range(0, n_beats, 4):
            pcs = sorted({int(p + tr) % 12 for p in sounding(voices, bar + 1e-3)})[:3]
            for pc in pcs:
                note(7, bar, 4, 60 + pc, 55)
    if plan["drums"] >= 0:
        for bar in range(0, n_beats, 4):
            for pos, drum in DRUMS[plan["drums"]]:
                if rng.random() < 0.92:  # a drummer's bars differ a little
                    note(9, bar + pos, 0.25, drum, 85 if drum in (36, 38) else int(rng.integers(40, 80)))
    return events


def render(synth: Synth, piece: dict, plan: dict, path: Path) -> float:
    """Render one rendition to a 22,050 Hz mono FLAC; returns its duration in seconds."""
    mono = synth.render(rendition_events(piece, plan), plan["duration_s"] + 1.0, plan["reverb"])
    peak = float(np.max(np.abs(mono))) or 1.0
    mono *= 0.89 / peak  # -1 dBFS
    tmp_flac = path.with_suffix(".tmp.flac")
    sf.write(tmp_flac, mono, SR, subtype="PCM_16", format="FLAC")
    tmp_flac.replace(path)
    return len(mono) / SR


def rendition_id(n: int) -> str:
    return f"c{n:06d}"


def rendition_path(out: Path, n: int) -> Path:
    return out / "audio" / f"{n // 1000:03d}" / (rendition_id(n) + ".flac")


FIELDS = ["id", "file", "in_db", "piece", "source", "rendition", "bpm", "transpose", "programs", "accompaniment",
          "duration_s"]


def build(out: Path, count: int) -> None:
    """Render renditions 0..count-1 (skipping those on disk) and rewrite renditions.csv."""
    cache = out / "pieces"
    cache.mkdir(parents=True, exist_ok=True)
    rows = []
    n = 0
    t0 = time.monotonic()
    rendered = 0
    synth: Synth | None = None
    for piece_no, piece in enumerate(iter_pieces(cache)):
        for r in range(RENDITIONS_PER_PIECE):
            if n >= count:
                break
            plan = plan_rendition(piece, piece_no, r)
            path = rendition_path(out, n)
            path.parent.mkdir(parents=True, exist_ok=True)
            if path.exists():
                duration = sf.info(path).duration
            else:
                synth = synth or Synth()
                duration = render(synth, piece, plan, path)
                rendered += 1
            acc = "+".join(k for k in ("bass", "pad", "drums") if plan[k] >= 0) or "none"
            rows.append({"id": rendition_id(n), "file": str(path.relative_to(out)), "in_db": int(not plan["negative"]),
                         "piece": piece_no, "source": piece["source"], "rendition": r, "bpm": round(plan["bpm"], 1),
                         "transpose": plan["transpose"], "programs": " ".join(map(str, plan["programs"])),
                         "accompaniment": acc, "duration_s": round(duration, 2)})
            n += 1
            if n % 100 == 0:
                write_csv(out / "renditions.csv", rows)
                el = time.monotonic() - t0
                print(f"{n} renditions ({rendered} rendered in {el:.0f} s) piece {piece_no}", flush=True)
        if n >= count:
            break
    write_csv(out / "renditions.csv", rows)
    print(f"done: {n} renditions, {sum(int(r['in_db']) for r in rows)} to store, "
          f"{sum(1 - int(r['in_db']) for r in rows)} negatives", flush=True)


def write_csv(path: Path, rows: list[dict]) -> None:
    tmp = path.with_suffix(".tmp")
    with open(tmp, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=FIELDS)
        w.writeheader()
        w.writerows(rows)
    tmp.replace(path)


def read_renditions(out: Path) -> list[dict]:
    with open(out / "renditions.csv", newline="") as f:
        return list(csv.DictReader(f))


# --- query excerpts ----------------------------------------------------------------------------------
# The dev hard set's degradations (see ../shared/corpus/make_queries_hard.py), re-implemented at 22,050 Hz.

DEGRADATIONS = ["clean", "noise_snr-5", "music_snr0", "room_mic", "speed_+2pct", "speed_-1pct", "pinknoise_snr-5"]
FF = ["ffmpeg", "-hide_banner", "-nostdin", "-loglevel", "error", "-y"]


def noise(kind: str, n: int, rng: np.random.Generator) -> np.ndarray:
    white = rng.standard_normal(n)
    if kind == "white":
        return white
    spec = np.fft.rfft(white)
    f = np.arange(len(spec), dtype=float)
    f[0] = 1.0
    pink = np.fft.irfft(spec / np.sqrt(f), n)
    return pink / (np.std(pink) or 1.0)


def at_snr(seg: np.ndarray, other: np.ndarray, snr_db: float) -> np.ndarray:
    ps = float(np.mean(seg.astype(np.float64) ** 2)) or 1e-12
    po = float(np.mean(other.astype(np.float64) ** 2)) or 1.0
    return seg + other * math.sqrt(ps / po / 10 ** (snr_db / 10))


def norm_peak(y: np.ndarray) -> np.ndarray:
    peak = float(np.max(np.abs(y)))
    return (y * (0.999 / peak) if peak > 0.999 else y).astype(np.float32)


def speed(x: np.ndarray, factor: float) -> np.ndarray:
    """Played `factor` times faster (pitch and tempo): resampled as radio speed-ups are."""
    from scipy.signal import resample_poly

    up, down = (50, 51) if factor > 1 else (100, 99)  # 1.02 and 0.99
    return resample_poly(x, up, down).astype(np.float32)


def room_ir(rng: np.random.Generator, rt60: float = 0.9) -> np.ndarray:
    t = np.arange(SR) / SR
    ir = rng.standard_normal(SR) * np.exp(-6.91 * t / rt60)
    ir[0] = 3.0
    return ir / np.sqrt(np.sum(ir**2))


def degrade(deg: str, seg: np.ndarray, rng: np.random.Generator, interferer: np.ndarray, path: Path) -> Path:
    if deg == "clean":
        y = seg
    elif deg in ("noise_snr-5", "pinknoise_snr-5"):
        y = norm_peak(at_snr(seg, noise("white" if deg.startswith("noise") else "pink", len(seg), rng), -5.0))
    elif deg == "music_snr0":
        y = norm_peak(at_snr(seg, interferer, 0.0))
    elif deg.startswith("speed"):
        y = norm_peak(speed(seg, 1.02 if "+" in deg else 0.99))
    elif deg == "room_mic":
        from scipy.signal import fftconvolve

        wet = fftconvolve(seg.astype(np.float64), room_ir(rng))[: len(seg)]
        wet = at_snr(wet, noise("pink", len(wet), rng), 15.0)
        path = path.with_suffix(".mp3")
        af = "highpass=f=120,highpass=f=120,lowpass=f=7000,lowpass=f=7000"
        subprocess.run(FF + ["-f", "f32le", "-ar", str(SR), "-ac", "1", "-i", "-", "-af", af, "-b:a", "64k",
                             "-map_metadata", "-1", "-fflags", "+bitexact", str(path)],
                       input=norm_peak(wet).astype("<f4").tobytes(), check=True)
        return path
    else:
        raise ValueError(deg)
    sf.write(path, y, SR, subtype="PCM_16")
    return path


def make_queries(out: Path, positives: int, lengths: list[float]) -> None:
    """Excerpts of `positives` stored renditions and of every negative, one degradation each (cycled)."""
    rows = read_renditions(out)
    stored = [r for r in rows if r["in_db"] == "1"]
    negatives = [r for r in rows if r["in_db"] == "0"]
    rng = np.random.default_rng([SEED, 1])
    chosen = [stored[i] for i in sorted(rng.choice(len(stored), size=min(positives, len(stored)), replace=False))]
    qdir = out / "queries"
    qdir.mkdir(exist_ok=True)
    qrows = []
    for k, r in enumerate(chosen + negatives):
        y, _ = sf.read(out / r["file"], dtype="float32")
        other = negatives[(k * 7 + 3) % len(negatives)]
        z, _ = sf.read(out / other["file"], dtype="float32") if other is not r else (y[::-1].copy(), SR)
        for j, length in enumerate(lengths):
            qrng = np.random.default_rng([SEED, int(r["id"][1:]), j])
            n = int(length * SR)
            start = int(qrng.integers(0, max(1, len(y) - n - SR)))
            seg = y[start:start + n]
            ia = int(qrng.integers(0, max(1, len(z) - n)))
            deg = DEGRADATIONS[(k + j) % len(DEGRADATIONS)]
            name = f"q{r['id'][1:]}{j}"
            path = degrade(deg, seg, qrng, np.resize(z[ia:ia + n], n), qdir / (name + ".wav"))
            qrows.append({"file": path.name, "true_track": r["id"] if r["in_db"] == "1" else "",
                          "start_s": f"{start / SR:.3f}", "length_s": f"{length:g}", "degradation": deg,
                          "source_track": r["id"]})
    with open(qdir / "queries.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(qrows[0]))
        w.writeheader()
        w.writerows(qrows)
    print(f"wrote {len(qrows)} queries ({sum(1 for q in qrows if q['true_track'])} positives) to {qdir}")


def status(out: Path) -> None:
    rows = read_renditions(out)
    secs = sum(float(r["duration_s"]) for r in rows)
    size = sum(f.stat().st_size for f in (out / "audio").rglob("*.flac"))
    print(f"{len(rows)} renditions ({sum(r['in_db'] == '1' for r in rows)} to store), {secs / 3600:.1f} h of audio, "
          f"{size / 1e9:.2f} GB, {len({r['piece'] for r in rows})} pieces")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("stage", choices=["render", "queries", "status"])
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT)
    ap.add_argument("--count", type=int, default=10500, help="renditions to render (stored and negatives)")
    ap.add_argument("--positives", type=int, default=500, help="stored renditions to cut queries from")
    ap.add_argument("--lengths", default="5,10", help="query lengths in seconds")
    a = ap.parse_args()
    a.out.mkdir(parents=True, exist_ok=True)
    if a.stage == "render":
        build(a.out, a.count)
    elif a.stage == "queries":
        make_queries(a.out, a.positives, [float(x) for x in a.lengths.split(",")])
    else:
        status(a.out)


if __name__ == "__main__":
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    main()
