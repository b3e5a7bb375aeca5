"""Text encoders (label -> embedding) behind one interface, and the per-label cache."""
from lgseg_ros.text.cache import CachedTextEncoder, EmbeddingCache
from lgseg_ros.text.encoders import (MINILM_DIM, MiniLMEncoder, OpenCLIPEncoder, TextEncoder,
                                     build_text_encoder, check_labels, minilm_model_dir,
                                     register_openclip_config)

__all__ = ["CachedTextEncoder", "EmbeddingCache", "MINILM_DIM", "MiniLMEncoder", "OpenCLIPEncoder", "TextEncoder",
           "build_text_encoder", "check_labels", "minilm_model_dir", "register_openclip_config"]
