"""tests/kit: the test kit, through its pytest plugin's fixtures."""

# A user's suite, copied out and run there (test_user_suite.py): not tests of this session.
collect_ignore = ["user_suite"]
