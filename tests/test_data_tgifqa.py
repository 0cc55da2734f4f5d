"""TGIF-QA loader on hand-written files in the real format (docs/datasets.md §3): TAB-separated `.csv` files
with a header row and CRLF endings, ` ?` question endings, Count answers with zeros; and one-line errors."""
from __future__ import annotations

import os

import pytest

from meltr.data.records import check_records
from meltr.data.tgifqa import TASKS, load_tgifqa
from meltr.errors import MeltrError

MC_HEADER = "gif_name question a1 a2 a3 a4 a5 answer vid_id key".split()
FRAMEQA_HEADER = "gif_name question answer type vid_id key description".split()
COUNT_HEADER = "gif_name question answer vid_id key".split()
HEADERS = {"action": MC_HEADER, "transition": MC_HEADER, "frameqa": FRAMEQA_HEADER, "count": COUNT_HEADER}

# Invented rows, real layout. Transition: two questions per GIF share gif_name and key, not vid_id.
ROWS = {
    ("action", "Train"): [
        ["tumblr_synthAAA01_250", "What does the cat do 3 times ?", "jump", "blink", "nod head", "lick paw",
         "wave tail", "3", "ACTION1", "7"],
        ["tumblr_synthAAA02_400", "What does the man do 10 or more than 10 times ?", "strum guitar", "sway",
         "step", "clap hands", "kiss woman's cheek", "0", "ACTION2", "9"],
    ],
    ("action", "Test"): [
        ["tumblr_synthAAA03_500", "What does the woman do 2 times ?", "spin", "shuffle", "snap", "swing arm",
         "paw toward a cat", "4", "ACTION12", "52"],
    ],
    ("transition", "Train"): [
        ["tumblr_synthTTT01_250", "What does the man do before point to the camera ?", "tilt head", "tip hat",
         "remove glasses", "vacuum", "sing passionately", "4", "TRANS23", "23"],
        ["tumblr_synthTTT01_250", "What does the man do after sing passionately ?", "point to the camera",
         "dance", "lick out tongue", "drift", "flicker", "0", "TRANS24", "23"],
    ],
    ("transition", "Test"): [
        ["tumblr_synthTTT02_400", "What does the dog do after look forward ?", "stand up", "tumble down",
         "wag tail", "tap head", "headbutt cat", "0", "TRANS811", "1318"],
    ],
    ("frameqa", "Train"): [
        ["tumblr_synthBBB02_400", "what is the man holding ?", "guitar", "0", "FRAMEQA1", "9",
         "a man is holding a guitar on a stage ."],
        # the real files have questions ending ". ?" and descriptions with commas
        ["tumblr_synthBBB03_250", "where is the guy walking very funny . ?", "machine", "3", "FRAMEQA2", "11",
         "a guy is walking very funny in a machine , then stops ."],
    ],
    ("frameqa", "Test"): [
        ['tumblr_synthBBB04_500', 'what is the color of the "cool" hat ?', "black", "2", "FRAMEQA1159", "27138",
         'a man in a black "cool" hat , waving .'],
        ["tumblr_synthBBB05_500", "how many men are sitting in the moving car ?", "two", "1", "FRAMEQA51329",
         "67414", "two men are sitting in a moving car ."],
    ],
    ("count", "Train"): [
        ["tumblr_synthAAA01_250", "How many times does the cat lick paw ?", "3", "COUNT1", "7"],
        ["tumblr_synthCCC02_250", "How many times does the man nod head ?", "0", "COUNT2", "16"],
        ["tumblr_synthCCC03_400", "How many times does the flag wave ?", "10", "COUNT3", "21"],
    ],
    ("count", "Test"): [
        ["tumblr_synthCCC04_100", "How many times does the woman step ?", "2", "COUNT18", "30"],
        ["tumblr_synthCCC05_250", "How many times does the dog wag ?", "0", "COUNT19", "31"],
    ],
}


def _write(path, header, rows, *, eol="\r\n", encoding="utf-8"):
    text = "".join("\t".join(r) + eol for r in [header] + rows)
    path.write_bytes(text.encode(encoding))
    return path


def _write_task(root, task, **kw):
    for split in ("Train", "Test"):
        _write(root / f"{split}_{task}_question.csv", HEADERS[task], ROWS[(task, split)], **kw)


@pytest.fixture
def root(tmp_path):
    for task in TASKS:
        _write_task(tmp_path, task)
    return tmp_path


def _gif(root, name, gif_dir="gifs"):
    return os.path.join(str(root), gif_dir, name + ".gif")


def _one_line(err: pytest.ExceptionInfo) -> str:
    msg = str(err.value)
    assert "\n" not in msg and "\r" not in msg
    return msg


def test_files_are_crlf_tab_separated_with_header(root):
    raw = (root / "Train_action_question.csv").read_bytes()
    assert raw.startswith(b"gif_name\tquestion\ta1\ta2\ta3\ta4\ta5\tanswer\tvid_id\tkey\r\n")
    assert raw.count(b"\r\n") == 3 and b"," not in raw.split(b"\r\n")[0]


def test_action_records_exact(root):
    data = load_tgifqa(root, "action")
    assert set(data) == {"train", "test"}
    assert data["train"][0] == {
        "id": "ACTION1", "video_id": "tumblr_synthAAA01_250", "video": _gif(root, "tumblr_synthAAA01_250"),
        "start": None, "end": None, "fps": None, "split": "train",
        "question": "What does the cat do 3 times ?",
        "options": ["jump", "blink", "nod head", "lick paw", "wave tail"], "answer": 3, "subtitles": ""}
    second = data["train"][1]
    assert second["answer"] == 0 and second["options"][4] == "kiss woman's cheek"
    assert second["question"].endswith(" ?")  # the dataset's spacing is kept verbatim
    assert [r["id"] for r in data["test"]] == ["ACTION12"] and data["test"][0]["split"] == "test"
    assert data["test"][0]["answer"] == 4  # 0-based: the last of five options
    for split, recs in data.items():
        check_records(recs, "multiple_choice", split)
        assert not any("\r" in str(v) for r in recs for v in r.values())


def test_transition_questions_share_the_gif_not_the_id(root):
    train = load_tgifqa(root, "transition")["train"]
    assert [r["id"] for r in train] == ["TRANS23", "TRANS24"]
    assert train[0]["video_id"] == train[1]["video_id"] == "tumblr_synthTTT01_250"
    assert train[1]["options"][0] == "point to the camera" and train[1]["answer"] == 0
    assert train[0]["answer"] == 4 and train[0]["options"][4] == "sing passionately"


def test_frameqa_records_exact(root):
    data = load_tgifqa(root, "frameqa", gif_dir="tgif/gifs")
    assert data["test"][0] == {
        "id": "FRAMEQA1159", "video_id": "tumblr_synthBBB04_500",
        "video": _gif(root, "tumblr_synthBBB04_500", "tgif/gifs"), "start": None, "end": None, "fps": None,
        "split": "test", "question": 'what is the color of the "cool" hat ?', "answer": "black"}
    assert data["train"][1]["question"] == "where is the guy walking very funny . ?"
    assert data["train"][1]["answer"] == "machine"
    assert data["test"][1]["answer"] == "two"  # number-type answers are words, kept as str
    for split, recs in data.items():
        check_records(recs, "open_ended", split)


def test_count_answers_are_ints_including_zero(root):
    data = load_tgifqa(root, "count")
    assert [r["answer"] for r in data["train"]] == [3, 0, 10]
    assert [r["answer"] for r in data["test"]] == [2, 0]
    assert all(type(r["answer"]) is int for rs in data.values() for r in rs)
    assert data["test"][1] == {
        "id": "COUNT19", "video_id": "tumblr_synthCCC05_250", "video": _gif(root, "tumblr_synthCCC05_250"),
        "start": None, "end": None, "fps": None, "split": "test",
        "question": "How many times does the dog wag ?", "answer": 0}
    for split, recs in data.items():
        check_records(recs, "count", split)


def test_lf_endings_bom_and_trailing_blank_lines_are_accepted(tmp_path):
    _write_task(tmp_path, "count", eol="\n")
    path = tmp_path / "Test_count_question.csv"
    path.write_bytes(b"\xef\xbb\xbf" + path.read_bytes() + b"\r\n\r\n")
    data = load_tgifqa(tmp_path, "count")
    assert [r["id"] for r in data["test"]] == ["COUNT18", "COUNT19"]
    assert [r["answer"] for r in data["train"]] == [3, 0, 10]


def test_ids_without_vid_id_column_and_repeated_vid_ids(tmp_path):
    _write(tmp_path / "Train_count_question.csv", ["gif_name", "question", "answer"],
           [["g1", "How many times does it jump ?", "2"], ["g1", "How many times does it blink ?", "4"]])
    _write(tmp_path / "Test_count_question.csv", COUNT_HEADER,
           [["g2", "How many ?", "2", "COUNT5", "1"], ["g3", "How many ?", "3", "COUNT5", "2"]])
    data = load_tgifqa(tmp_path, "count")
    assert [r["id"] for r in data["train"]] == ["g1#2", "g1#3"]  # <gif_name>#<line>, header = line 1
    assert [r["id"] for r in data["test"]] == ["COUNT5", "COUNT5#3"]


def test_unknown_task_lists_known_ones(root):
    with pytest.raises(MeltrError) as err:
        load_tgifqa(root, "frame")
    msg = _one_line(err)
    assert "'frame'" in msg and all(t in msg for t in ("action", "transition", "frameqa", "count"))


def _corrupt(root, name, text: str | bytes):
    path = root / name
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    return str(path)


def _rows(task, split="Train"):
    return ["\t".join(HEADERS[task])] + ["\t".join(r) for r in ROWS[(task, split)]]


@pytest.mark.parametrize("task,name,make,expect", [
    ("action", "Train_action_question.csv",
     lambda: "\r\n".join(_rows("action")[:2] + [_rows("action")[2].replace("\t0\t", "\t5\t")]) + "\r\n",
     ("line 3", "answer", "0-4", "5")),
    ("transition", "Test_transition_question.csv",
     lambda: "\r\n".join(_rows("transition", "Test")).replace("\t0\tTRANS811", "\t-1\tTRANS811") + "\r\n",
     ("line 2", "answer", "0-4", "-1")),
    ("action", "Train_action_question.csv",
     lambda: "\r\n".join(_rows("action")).replace("\t3\tACTION1", "\tjump\tACTION1") + "\r\n",
     ("line 2", "answer", "0-based option index", "'jump'")),
    ("count", "Test_count_question.csv",
     lambda: "\r\n".join(_rows("count", "Test")).replace("\t2\tCOUNT18", "\t2.5\tCOUNT18") + "\r\n",
     ("line 2", "answer", "integer", "'2.5'")),
    ("count", "Train_count_question.csv",
     lambda: "\r\n".join(_rows("count")).replace("\t10\tCOUNT3", "\t-3\tCOUNT3") + "\r\n",
     ("line 4", "answer", ">= 0")),
    ("action", "Train_action_question.csv",  # a dropped option: 9 fields under a 10-column header
     lambda: "\r\n".join(_rows("action")).replace("\twave tail\t", "\t") + "\r\n",
     ("line 2", "expected 10 TAB-separated fields", "got 9")),
    ("frameqa", "Train_frameqa_question.csv",  # a stray TAB inside a description
     lambda: "\r\n".join(_rows("frameqa")).replace("then stops", "then\tstops") + "\r\n",
     ("line 3", "expected 7", "got 8")),
    ("frameqa", "Test_frameqa_question.csv",
     lambda: "\r\n".join(_rows("frameqa", "Test")).replace("\tblack\t2\t", "\t\t2\t") + "\r\n",
     ("line 2", "answer", "non-empty")),
    ("count", "Train_count_question.csv",
     lambda: "\r\n".join(r.replace("\tanswer", "\tlabel") for r in _rows("count")) + "\r\n",
     ("line 1", "column(s) answer", "gif_name\\tquestion\\tanswer\\tvid_id\\tkey")),
    ("action", "Train_action_question.csv",
     lambda: "\r\n".join(r.replace("\ta3", "") for r in _rows("action")[:1]) + "\r\n",
     ("line 1", "column(s) a3")),
    ("count", "Test_count_question.csv",  # re-saved by a spreadsheet as a real comma csv
     lambda: "\r\n".join(r.replace("\t", ",") for r in _rows("count", "Test")) + "\r\n",
     ("line 1", "TAB-separated header", "comma-separated")),
    ("count", "Test_count_question.csv", lambda: "", ("empty file",)),
    ("count", "Test_count_question.csv", lambda: "\r\n\r\n", ("empty file",)),
    ("count", "Test_count_question.csv", lambda: "\t".join(COUNT_HEADER) + "\r\n", ("at least one question row",)),
    ("frameqa", "Train_frameqa_question.csv",  # Latin-1 bytes on line 3
     lambda: ("\r\n".join(_rows("frameqa")) + "\r\n").replace("machine", "caf\u00e9").encode("latin-1"),
     ("line 3", "expected UTF-8")),
])
def test_malformed_files_name_file_and_line(root, task, name, make, expect):
    path = _corrupt(root, name, make())
    with pytest.raises(MeltrError) as err:
        load_tgifqa(root, task)
    msg = _one_line(err)
    assert msg.startswith(path + ":"), msg
    for part in expect:
        assert part in msg, (part, msg)


def test_missing_file_is_named(root):
    os.remove(root / "Test_transition_question.csv")
    with pytest.raises(MeltrError) as err:
        load_tgifqa(root, "transition")
    msg = _one_line(err)
    assert str(root / "Test_transition_question.csv") in msg and "not found" in msg


def test_loader_does_not_need_media(root):
    data = load_tgifqa(root, "action")
    assert not (root / "gifs").exists()
    assert data["train"][0]["video"].endswith(os.path.join("gifs", "tumblr_synthAAA01_250.gif"))
