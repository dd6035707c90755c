"""Decoding through PyAV (data/media.py) and the audio extractors (data/extractors/audio.py)."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from sentangle.core.errors import ConfigError, DataError, UnknownNameError
from sentangle.data.extractors import audio_extractor, audio_extractors
from sentangle.data.media import decode_audio, decode_video, optional_import, probe

SR = 16000


def dominant_hz(x: np.ndarray, sr: int = SR) -> float:
    spectrum = np.abs(np.fft.rfft(x * np.hanning(len(x))))
    return float(np.fft.rfftfreq(len(x), 1 / sr)[np.argmax(spectrum)])


# ---- decoding -------------------------------------------------------------------------------------
def test_wav_decodes_to_the_samples_written(media, tmp_path):
    tone = media.tone(440, 1.0)
    x = decode_audio(media.wav(tmp_path / "a.wav", tone))
    assert x.dtype == np.float32 and x.shape == (SR,)
    # 16-bit PCM: the written samples, within one quantisation step
    np.testing.assert_allclose(x, np.round(tone * 32767) / 32768, atol=1 / 32768)


def test_stereo_44k_is_resampled_to_16k_mono(media, tmp_path):
    tone = media.tone(1000, 1.5, sr=44100)
    x = decode_audio(media.wav(tmp_path / "s.wav", tone, sr=44100, channels=2))
    assert abs(len(x) - 1.5 * SR) <= 2  # the resampler may round the last sample
    assert dominant_hz(x) == pytest.approx(1000, abs=2)
    # both channels equal: the mono mix keeps the amplitude (RMS of a 0.3 sine: 0.3 / sqrt 2)
    assert np.sqrt(np.mean(x[1000:-1000] ** 2)) == pytest.approx(0.3 / np.sqrt(2), rel=0.02)


def test_flac_written_by_pyav_is_lossless(media, tmp_path):
    tone = media.tone(300, 2.0)
    x = decode_audio(media.write(tmp_path / "a.flac", tone))
    np.testing.assert_allclose(x, np.trunc(tone * 32767) / 32768, atol=1.01 / 32768)


def test_start_end_cut_has_the_exact_samples(media, tmp_path):
    ramp = np.linspace(-0.9, 0.9, 3 * SR).astype(np.float32)  # every sample different: the offset shows
    path = media.wav(tmp_path / "ramp.wav", ramp)
    x = decode_audio(path, start=0.5, end=1.25)
    assert len(x) == round((1.25 - 0.5) * SR) == 12000
    np.testing.assert_allclose(x, np.round(ramp[8000:20000] * 32767) / 32768, atol=1 / 32768)
    # a FLAC (seeks by its own frames) cuts the same way
    x = decode_audio(media.write(tmp_path / "ramp.flac", ramp), start=1.1, end=2.35)
    assert len(x) == round((2.35 - 1.1) * SR)
    np.testing.assert_allclose(x, np.trunc(ramp[17600:37600] * 32767) / 32768, atol=1.01 / 32768)
    # only an end: from the first sample; an end past the file: up to the file's end
    assert len(decode_audio(path, end=0.25)) == 4000
    assert len(decode_audio(path, start=2.5, end=9.0)) == SR // 2
    # another rate: counted at that rate
    assert len(decode_audio(path, 8000, start=0.5, end=1.25)) == 6000


@pytest.mark.parametrize("suffix", [".mp4", ".mkv", ".webm", ".avi", ".mov", ".mp3", ".m4a"])
def test_every_supported_format_decodes(media, tmp_path, suffix):
    video = media.MEDIA_CODECS[suffix][0] is not None
    frames = media.astronaut(25) if video else None
    path = media.write(
        tmp_path / f"clip{suffix}", media.tone(440, 1.0, sr=media.MEDIA_CODECS[suffix][2]), frames=frames
    )
    x = decode_audio(path)
    # lossy codecs add priming / padding samples, never more than a few frames of them
    assert abs(len(x) - SR) < 0.15 * SR
    assert dominant_hz(x) == pytest.approx(440, abs=3)
    info = probe(path)
    assert info["has_audio"] and info["has_video"] == video
    assert info["duration_s"] == pytest.approx(1.0, abs=0.15)
    if video:
        got = list(decode_video(path, fps=5))
        assert len(got) == 5  # 25 frames at 25 fps, one every 0.2 s


def test_cut_of_an_mp4_has_end_minus_start_samples(media, tmp_path):
    path = media.write(tmp_path / "v.mp4", media.tone(440, 3.0), frames=media.astronaut(30), fps=10)
    assert len(decode_audio(path, start=1.0, end=2.2)) == round(1.2 * SR)


def test_video_frames_are_the_ones_at_each_step(media, tmp_path):
    frames = media.astronaut(50)  # 2 s at 25 fps
    path = media.write(tmp_path / "v.mp4", media.tone(440, 2.0), frames=frames)
    got = list(decode_video(path, fps=5))
    times = [t for t, _ in got]
    np.testing.assert_allclose(times, np.arange(10) * 0.2, atol=1e-6)
    for t, img in got:
        assert img.dtype == np.uint8 and img.shape == frames[0].shape
        # the decoded (lossy) frame is closest to the source frame shown at time t
        distance = [np.abs(img.astype(int) - f.astype(int)).mean() for f in frames]
        assert int(np.argmin(distance)) == round(t * 25)
    cut = [t for t, _ in decode_video(path, fps=2, start=0.5, end=1.5)]
    assert cut == pytest.approx([0.52, 1.0], abs=1e-6)  # the first frame at or after 0.5 s, 1.0 s; 1.5 s is the end
    assert len(list(decode_video(path, fps=100))) == 50  # never more frames than the file has


def test_probe_tells_streams_and_duration(media, tmp_path):
    assert probe(media.wav(tmp_path / "a.wav", media.tone(200, 1.25))) == {
        "duration_s": pytest.approx(1.25),
        "has_audio": True,
        "has_video": False,
    }
    silent = probe(media.write(tmp_path / "silent.mp4", frames=media.astronaut(10)))
    assert silent["has_video"] and not silent["has_audio"]


# ---- broken files ---------------------------------------------------------------------------------
def test_broken_files_raise_data_error_naming_file_and_reason(media, tmp_path):
    empty = tmp_path / "empty.wav"
    empty.write_bytes(b"")
    header_only = media.wav(tmp_path / "header.wav", np.zeros(0, np.float32))
    junk = tmp_path / "junk.mp4"
    junk.write_bytes(np.random.default_rng(0).bytes(4000))
    flac = media.write(tmp_path / "good.flac", media.tone(300, 2.0))
    truncated = tmp_path / "truncated.flac"
    truncated.write_bytes(flac.read_bytes()[:300])
    video_only = media.write(tmp_path / "silent.mp4", frames=media.astronaut(10))
    cases = [
        (empty, "empty"),
        (header_only, "no audio samples"),
        (junk, "not a readable"),
        (truncated, "not a readable|cannot decode"),
        (video_only, "no audio stream"),
        (tmp_path / "missing.wav", "not found"),
        (tmp_path, "not a regular file"),
    ]
    for path, reason in cases:
        with pytest.raises(DataError, match=reason) as e:
            decode_audio(path)
        assert str(path) in str(e.value)
    with pytest.raises(DataError, match="no video stream"):
        list(decode_video(flac, fps=5))
    with pytest.raises(DataError, match="empty"):
        probe(empty)


def test_bad_cuts_are_refused(media, tmp_path):
    path = media.wav(tmp_path / "a.wav", media.tone(200, 1.0))
    with pytest.raises(DataError, match="not after start"):
        decode_audio(path, start=0.8, end=0.5)
    with pytest.raises(DataError, match="ends before it"):
        decode_audio(path, start=3.0, end=4.0)
    with pytest.raises(DataError, match="start=-1"):
        decode_audio(path, start=-1)
    with pytest.raises(ConfigError, match="fps"):
        list(decode_video(path, fps=0))


def test_missing_optional_package_names_the_extra():
    with pytest.raises(ConfigError, match=r"sentangle\[extract\]"):
        optional_import("sentangle_no_such_module", package="nosuch")


# ---- audio extractors -----------------------------------------------------------------------------
def test_registry_lists_the_extractors_and_refuses_unknown_names():
    assert audio_extractors() == ["compare", "compare_functionals", "egemaps", "egemaps_functionals", "librosa"]
    with pytest.raises(UnknownNameError, match="did you mean|Did you mean"):
        audio_extractor("egemap")


def test_egemaps_gives_25_descriptors_at_100_frames_per_second(media):
    pytest.importorskip("opensmile")
    seconds, hz = 2.0, 220.0
    x, names, fps = audio_extractor("egemaps")(media.tone(hz, seconds), SR)
    assert x.dtype == np.float32 and x.shape[1] == len(names) == 25 and fps == 100.0
    # one frame per 10 ms hop; the analysis windows (up to 60 ms) take a few frames off the end
    assert seconds * fps - 6 <= x.shape[0] <= seconds * fps
    # F0 in semitones above 27.5 Hz: 12 log2(220 / 27.5) = 36 for a 220 Hz tone
    f0 = x[:, names.index("F0semitoneFrom27.5Hz_sma3nz")]
    assert np.median(f0) == pytest.approx(36.0, abs=0.3)
    spec = audio_extractor("egemaps").spec
    assert spec["name"] == "egemaps" and spec["package"] == "opensmile" and spec["version"]
    assert spec["settings"]["feature_set"] == "eGeMAPSv02"


def test_compare_gives_65_descriptors(media):
    pytest.importorskip("opensmile")
    x, names, fps = audio_extractor("compare")(media.tone(300, 1.0), SR)
    assert x.shape[1] == len(names) == 65 and fps == 100.0 and 94 <= x.shape[0] <= 100


def test_librosa_features_equal_librosa_called_directly(media):
    librosa = pytest.importorskip("librosa")
    tone = media.tone(220, 1.0)
    x, names, fps = audio_extractor("librosa")(tone, SR)
    assert fps == 100.0 and x.shape == (101, 25) and len(names) == 25  # centred frames: 1 + 16000 // 160
    mfcc = librosa.feature.mfcc(y=tone, sr=SR, n_mfcc=20, n_fft=512, hop_length=160, n_mels=40, htk=True)
    np.testing.assert_allclose(x[:, :20], mfcc.T, rtol=1e-5, atol=1e-4)
    # hand values: log F0 of a 220 Hz tone, RMS of a 0.3 sine (0.3 / sqrt 2) away from the edges
    assert np.median(x[:, names.index("log_f0")]) == pytest.approx(np.log(220), abs=0.01)
    assert np.median(x[5:-5, names.index("rms")]) == pytest.approx(0.3 / np.sqrt(2), rel=0.02)


def test_speech_has_voiced_and_unvoiced_frames(media, tmp_path):
    """Real speech (espeak-ng, when installed): eGeMAPS F0 is 0 on unvoiced frames and pauses."""
    pytest.importorskip("opensmile")
    if shutil.which("espeak-ng") is None:
        pytest.skip("espeak-ng not installed (apt-get install espeak-ng)")
    path = media.speech("Is this a real sentence? Yes, it is.", tmp_path / "speech.wav")
    x, names, _ = audio_extractor("egemaps")(decode_audio(path), SR)
    voiced = x[:, names.index("F0semitoneFrom27.5Hz_sma3nz")] > 0
    assert 0.2 < voiced.mean() < 0.9
    # a voice's pitch: 27.5 Hz * 2^(f0 / 12) between 60 and 400 Hz
    hz = 27.5 * 2 ** (np.median(x[voiced, names.index("F0semitoneFrom27.5Hz_sma3nz")]) / 12)
    assert 60 < hz < 400


def test_speech_falls_back_to_a_voice_like_tone_without_espeak(media, tmp_path, monkeypatch):
    monkeypatch.setattr(shutil, "which", lambda name: None)  # as if espeak-ng were not installed
    assert "not installed" in media.speech_source()
    short, sr = media.read_wav(media.speech("yes", tmp_path / "short.wav"))
    long, _ = media.read_wav(media.speech("that was a great film, I liked it", tmp_path / "long.wav"))
    assert sr == SR and len(long) > 2 * len(short) > 0
    assert dominant_hz(long) == pytest.approx(140, abs=3)  # its fundamental, the strongest harmonic
    assert (long == 0).mean() > 0.1  # pauses between the "syllables"
