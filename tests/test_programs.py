"""Gene programs: GMT reading and writing, and matching programs to a vocabulary."""

from __future__ import annotations

import numpy as np
import pytest

from ssl_st.genes import Vocabulary
from ssl_st.programs import program_mask, read_gmt, write_gmt

VOCABULARY = Vocabulary(
    ids=tuple(f"ENSG{i:011d}" for i in range(6)),
    symbols=("C1orf112", "TP53", "Gapdh", "CD4", "", "MT-CO1"),
)


def test_gmt_round_trip(tmp_path):
    programs = {"HALLMARK_A": ["TP53", "C1orf112", "CD4"], "PROG_B": ["MT-CO1"]}
    path = write_gmt(programs, tmp_path / "p.gmt", description="http://example.org")
    assert path.read_text().splitlines()[0] == "HALLMARK_A\thttp://example.org\tTP53\tC1orf112\tCD4"
    assert read_gmt(path) == programs
    assert read_gmt(write_gmt(programs, tmp_path / "q.gmt")) == programs  # empty description


def test_read_gmt_skips_blank_lines_and_keeps_symbol_case(tmp_path):
    path = tmp_path / "p.gmt"
    path.write_text("A\tdesc\tC1orf112\tTP53\t\n\n   \nB\t\tCD4\tCD4\r\n")
    assert read_gmt(path) == {"A": ["C1orf112", "TP53"], "B": ["CD4"]}


@pytest.mark.parametrize("bad", ["B desc CD4 TP53", "B\tdesc", "\tdesc\tCD4", "B\tdesc\t\t"])
def test_malformed_gmt_line_names_file_and_line(tmp_path, bad):
    path = tmp_path / "bad.gmt"
    path.write_text(f"A\tdesc\tTP53\n\n{bad}\n")
    with pytest.raises(ValueError, match=r"bad\.gmt, line 3"):
        read_gmt(path)


def test_duplicate_program_is_an_error(tmp_path):
    path = tmp_path / "dup.gmt"
    path.write_text("A\td\tTP53\nA\td\tCD4\n")
    with pytest.raises(ValueError, match="line 2.*twice"):
        read_gmt(path)


def test_program_matching_is_case_insensitive_on_both_sides():
    # Upstream upper-cased the GMT only, so the vocabulary's "C1orf112" and "Gapdh" never matched.
    names, mask = program_mask({"P": ["C1ORF112", "gapdh", "tp53", "NOT_A_GENE"]}, VOCABULARY)
    assert names == ["P"]
    assert mask.dtype == bool and mask.shape == (1, len(VOCABULARY))
    assert mask[0].tolist() == [True, True, True, False, False, False]


def test_empty_vocabulary_symbols_never_match():
    names, mask = program_mask({"P": ["", "CD4"]}, VOCABULARY)
    assert mask[0].tolist() == [False, False, False, True, False, False]


def test_min_genes_drops_small_programs_and_keeps_order():
    programs = {"big": ["TP53", "CD4", "MT-CO1"], "none": ["XYZ"], "small": ["cd4"], "mid": ["TP53", "Gapdh"]}
    names, mask = program_mask(programs, VOCABULARY)
    assert names == ["big", "small", "mid"]
    names, mask = program_mask(programs, VOCABULARY, min_genes=2)
    assert names == ["big", "mid"]
    np.testing.assert_array_equal(mask.sum(axis=1), [3, 2])


def test_no_match_gives_an_empty_matrix():
    names, mask = program_mask({"P": ["XYZ"]}, VOCABULARY)
    assert names == [] and mask.shape == (0, len(VOCABULARY))
