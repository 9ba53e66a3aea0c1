"""Data layer: vocabulary, validated text files, TFDS builder, grain batches, built-in grammar corpus."""

from mimtext.data.corpus import Corpus
from mimtext.data.corpus import CorpusSplit
from mimtext.data.corpus import load_corpus
from mimtext.data.corpus import resolve_data_dir
from mimtext.data.grammar import TopicGrammar
from mimtext.data.grammar import builtin_corpus
from mimtext.data.grammar import entropy_per_sentence
from mimtext.data.pipeline import BatchPipeline
from mimtext.data.pipeline import Encoded
from mimtext.data.pipeline import encode_lines
from mimtext.data.text_files import DataError
from mimtext.data.text_files import read_lines
from mimtext.data.vocab import EOS_ID
from mimtext.data.vocab import PAD_ID
from mimtext.data.vocab import SOS_ID
from mimtext.data.vocab import UNK_ID
from mimtext.data.vocab import Vocabulary
