"""Feature extractors for `sentangle extract` (data/extract.py).

audio.py: registered audio extractors (openSMILE eGeMAPS / ComParE descriptors or functionals,
librosa), each giving (features (T, d) float32, feature names, frames per second) and a spec of
what made them.
vision.py: `extract_faces(path, fps, start, end, detector=name)` giving
(features (T, d) float32, mask (T,) bool, feature names, spec); the pipeline imports it only when
vision is asked for.
"""

from sentangle.data.extractors.audio import DEFAULT, AudioExtractor, audio_extractor, audio_extractors

__all__ = ["DEFAULT", "AudioExtractor", "audio_extractor", "audio_extractors"]
