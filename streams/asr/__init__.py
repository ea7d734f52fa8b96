"""Speech recognition for the audio path: client audio in, partial and final transcripts out.

One `SpeechRecognitionEngine` per worker process (it owns the Whisper model); the transcriber
agent hands it `AudioChunk`s and turns the `RecognizedText`s it yields into transcript events.
"""

from streams.asr.audio import AudioFormatError
from streams.asr.model import AsrModelError
from streams.asr.transcriber import (
    AsrCapacityError,
    RecognizedText,
    RecognizerConfig,
    SpeechRecognitionEngine,
    StreamingRecognizer,
)

__all__ = [
    "AsrCapacityError",
    "AsrModelError",
    "AudioFormatError",
    "RecognizedText",
    "RecognizerConfig",
    "SpeechRecognitionEngine",
    "StreamingRecognizer",
]
