"""Hostile annotation files: every random, truncated or mistyped COCO dictionary either loads or raises
fcoslab's own clear error, never another exception."""

import json

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fcoslab.data import check_coco_dict, read_coco_json
from fcoslab.errors import FcoslabError

scalars = st.one_of(st.none(), st.booleans(), st.integers(-5, 5), st.floats(allow_nan=True, allow_infinity=True),
                    st.text(max_size=4))
values = st.recursive(scalars, lambda inner: st.one_of(st.lists(inner, max_size=4),
                                                       st.dictionaries(st.text(max_size=6), inner, max_size=4)),
                      max_leaves=10)
number = st.one_of(st.integers(-3, 50), st.floats(-3, 50), st.none(), st.text(max_size=2), st.booleans())
image = st.fixed_dictionaries({"id": st.one_of(st.integers(0, 4), st.text(max_size=1)),
                               "file_name": st.one_of(st.text(max_size=5), st.none(), st.integers())},
                              optional={"width": number, "height": number})
annotation = st.fixed_dictionaries({}, optional={
    "image_id": st.one_of(st.integers(0, 4), values), "category_id": st.one_of(st.integers(0, 4), values),
    "bbox": st.one_of(st.lists(number, max_size=5), number), "iscrowd": number, "area": number, "id": number})
category = st.fixed_dictionaries({"id": st.one_of(st.integers(0, 4), st.booleans(), st.none())},
                                 optional={"name": values})
coco_like = st.fixed_dictionaries({}, optional={
    "images": st.one_of(st.lists(image, max_size=4), values), "annotations": st.one_of(st.lists(annotation, max_size=6), values),
    "categories": st.one_of(st.lists(category, max_size=3), values), "info": values})


def loads_or_clear_error(data) -> None:
    try:
        out = check_coco_dict(data, "fuzz.json")
    except FcoslabError as e:
        assert "fuzz.json" in str(e)
        return
    assert {"images", "annotations", "categories"} <= set(out)
    for a in out["annotations"]:
        assert len(a["bbox"]) == 4 and a["iscrowd"] in (0, 1)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.one_of(coco_like, values))
def test_random_dictionaries(data):
    loads_or_clear_error(data)


@settings(max_examples=100, deadline=None)
@given(st.integers(0, 400))
def test_truncated_files(tmp_path_factory, cut):
    good = {"images": [{"id": 1, "file_name": "a.png", "width": 10, "height": 10}],
            "annotations": [{"id": 1, "image_id": 1, "category_id": 3, "bbox": [1, 1, 4, 4], "area": 16, "iscrowd": 0}],
            "categories": [{"id": 3, "name": "x"}]}
    text = json.dumps(good)
    path = tmp_path_factory.mktemp("fuzz") / "t.json"
    path.write_text(text[:cut])
    try:
        read_coco_json(path)
    except FcoslabError as e:
        assert "t.json" in str(e)


def test_unhashable_ids_are_reported():
    base = {"images": [{"id": 1, "file_name": "a.png"}], "categories": [{"id": 2}]}
    for key in ("image_id", "category_id"):
        ann = {"image_id": 1, "category_id": 2, "bbox": [0, 0, 1, 1], key: [1]}
        try:
            check_coco_dict(dict(base, annotations=[ann]), "f.json")
        except FcoslabError as e:
            assert key in str(e)
        else:
            raise AssertionError("accepted a list as an id")
