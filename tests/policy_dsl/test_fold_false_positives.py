"""Folding adds no false positives in other scripts, and no more in Latin script than measured
(docs/performance.md, "Folding: false positives"); fold_false_positives.py prints the table."""

from __future__ import annotations

import fold_false_positives as fp

OTHER = tuple(locale for locale in fp.LOCALES if locale not in fp.LATIN)


def test_attack_terms_gain_no_flag_on_benign_text_in_any_script():
    rates = fp.measure(fp.attack_terms())
    assert sum(r.texts for r in rates) == len(fp.LOCALES) * fp.TEXTS_PER_LOCALE
    assert [(r.locale, r.added) for r in rates if r.added] == []


def test_every_dictionary_word_gains_no_flag_in_other_scripts():
    rates = fp.measure(fp.every_dictionary_word(), OTHER)
    assert [(r.locale, r.added[:3]) for r in rates if r.added] == []
    # The single-script rule is what keeps them out: a skeleton on every word would add flags.
    assert sum(r.naive for r in rates) > sum(r.after for r in rates)


def test_latin_script_flags_added_by_accent_folding_stay_within_the_measured_bound():
    rates = fp.measure(fp.every_dictionary_word(), tuple(sorted(fp.LATIN)))
    added = sum(len(r.added) for r in rates)
    assert added <= 92, [(r.locale, r.added[:3]) for r in rates if r.added]
    assert sum(r.texts for r in rates) == 900
