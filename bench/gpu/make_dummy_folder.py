"""A model folder for serving random weights: a preset's config.json (or any config.json given by path)
beside a word-level tokenizer covering its whole vocabulary, with a chat template.
python make_dummy_folder.py PRESET|CONFIG_JSON DIR"""

import json
import shutil
import sys
from pathlib import Path

from tokenizers import Tokenizer, models, pre_tokenizers

from pyinfer.model_files import PRESETS_DIR

preset, folder = sys.argv[1], Path(sys.argv[2])
folder.mkdir(parents=True, exist_ok=True)
config = Path(preset) if preset.endswith(".json") else PRESETS_DIR / f"{preset}.json"
if config.resolve() != (folder / "config.json").resolve():
    shutil.copy(config, folder / "config.json")
vocab_size = json.loads((folder / "config.json").read_text())["vocab_size"]
words = ["<s>", "</s>", "<unk>", *(f"w{i}" for i in range(3, vocab_size))]
tokenizer = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="<unk>"))
tokenizer.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
tokenizer.save(str(folder / "tokenizer.json"))
template = "{% for m in messages %}{{ m['role'] }} {{ m['content'] }} {% endfor %}assistant"
(folder / "tokenizer_config.json").write_text(
    json.dumps(
        {
            "tokenizer_class": "PreTrainedTokenizerFast",
            "bos_token": "<s>",
            "eos_token": "</s>",
            "unk_token": "<unk>",
            "chat_template": template,
        }
    )
)
print(f"{folder}: {preset} config, word-level tokenizer of {vocab_size} tokens")
