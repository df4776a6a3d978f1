"""The anatomy table: one row per vertebra, consistent ids, ranks and codes."""
import pytest

from vertebra_traversal import anatomy


def test_standard_vertebrae_are_c1_to_l5_with_verse_ids_1_to_24():
    assert [v.name for v in anatomy.STANDARD][:3] == ["C1", "C2", "C3"]
    assert [v.label for v in anatomy.STANDARD] == list(range(1, 25))
    assert [v.regression_value for v in anatomy.STANDARD] == [float(i) for i in range(1, 25)]


def test_transitional_vertebrae_sit_between_their_neighbours():
    t13, l6 = anatomy.vertebra("T13"), anatomy.vertebra("L6")
    assert (t13.label, l6.label) == (28, 25)
    assert anatomy.vertebra("T12").rank < t13.rank < anatomy.vertebra("L1").rank
    assert l6.rank > anatomy.vertebra("L5").rank
    assert [v.name for v in anatomy.VERTEBRAE][18:21] == ["T12", "T13", "L1"]


def test_codes_colours_and_names_are_unique_and_valid():
    vertebrae = anatomy.VERTEBRAE
    assert len({v.snomed_code for v in vertebrae}) == len(vertebrae)
    assert len({v.color for v in vertebrae}) == len(vertebrae)
    assert all(all(0 <= c <= 1 for c in v.color) for v in vertebrae)
    assert anatomy.vertebra(1).snomed_code == "14806007" and anatomy.vertebra("L5").snomed_code == "49668003"


def test_lookups_and_errors():
    assert anatomy.label_of("l4") == 23 and anatomy.name_of(23) == "L4"
    assert not anatomy.is_valid_label(26) and not anatomy.is_valid_label(0)
    with pytest.raises(KeyError, match="unknown vertebra label id 99"):
        anatomy.vertebra(99)
    with pytest.raises(KeyError, match="unknown vertebra name"):
        anatomy.vertebra("X9")


@pytest.mark.parametrize("value, expected", [(20, 20), (28, 28), (0, None), (26, None), (99, None), (True, None),
                                             (20.0, None), ("20", None), (None, None)])
def test_a_value_read_from_a_file_is_a_vertebra_id_only_as_an_integer_of_the_table(value, expected):
    assert anatomy.as_label(value) == expected
