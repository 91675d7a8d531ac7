async def test_d() -> None:
    pass


def test_c() -> None:
    pass
