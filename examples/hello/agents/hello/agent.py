"""The smallest rf agent: input {"name": "Ada"} -> {"message": "hello, Ada"}."""

from rf import Context


def handle(input: dict, ctx: Context) -> dict:
    name = (input or {}).get("name", "world") if isinstance(input, dict) else "world"
    ctx.logger.info("greeting %s in %s", name, ctx.env)
    return {"message": f"hello, {name}"}
