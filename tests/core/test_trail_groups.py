"""Trail groups report their members' moves to the journal: every group when asked without symbols, only the
named symbols' groups otherwise (the engine names the symbols that had ticks in its step)."""

from tickguard.core.trail_groups import TrailGroups


def test_moved_members_looks_at_the_named_symbols_only_and_at_every_group_without():
    groups = TrailGroups(lambda symbol: None)
    assert groups.join(1, "AAA", 1, 1000, 10) and groups.join(2, "BBB", 1, 500, 5)
    assert sorted(groups.moved_members()) == [1, 2]  # first look: both marks are new
    groups.marks_for("AAA").observe(1010, 1012)
    groups.marks_for("BBB").observe(510, 512)
    assert groups.moved_members(["AAA"]) == [1]  # BBB's move is not looked at...
    assert groups.moved_members(["CCC"]) == []  # (a symbol without a group)
    assert groups.moved_members() == [2]  # ...until a look at every group, which still sees it
    assert groups.moved_members() == []
    groups.marks_for("AAA").observe(1020, 1022)
    assert groups.moved_members(["AAA", "BBB"]) == [1]
