"""A support agent: looks the customer up in the CRM, then answers with the LLM.

Everything it touches resolves per environment: in staging (rf test, the
staging URL) the draft prompt and the staging CRM instance; in production the
published prompt and the production CRM instance.
"""

from rf import Context


def handle(input: dict, ctx: Context) -> dict:
    customer_id = str(input.get("customer_id", "42"))
    message = str(input.get("message", "Hello!"))
    customer = ctx.connectors.call("crm", "get-customer", id=customer_id)
    prompt = ctx.prompts.get("support-system")
    system = ctx.prompts.render("support-system", product="Acme", customer=customer["name"])
    reply = ctx.llm.chat([
        {"role": "system", "content": system},
        {"role": "user", "content": message},
    ])
    ctx.logger.info("answered %s with prompt v%s", customer["name"], prompt.version)
    return {
        "message": reply.text,
        "customer": customer["name"],
        "crm": customer["source"],
        "prompt_version": prompt.version,
        "env": ctx.env,
    }
