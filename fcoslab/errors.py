"""The one exception type for user mistakes: the CLI prints its message and exits with status 2."""


class FcoslabError(Exception):
    """A problem with the user's input (a file, a config key, a value), described in plain words.

    The message always names the file, key or value and says what is wrong with it.

    Example::

        import fcoslab
        try:
            fcoslab.load_config("shapes", ["train.epoch=2"])
        except fcoslab.FcoslabError as e:
            print(e)  # unknown config key 'train.epoch'; valid keys in 'train': epochs, ...
    """
