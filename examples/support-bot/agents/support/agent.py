"""A support agent: looks the customer up in the CRM, then answers with the LLM.

Everything it touches resolves per environment: in staging (rf test, the
staging URL) the draft prompts and the staging CRM instance; in production the
published prompts and the production CRM instance.

Its eval suite is in evals/ (part of the agent's commit): `rf eval support`.
"""

from rf import Context


def handle(input: dict, ctx: Context) -> dict:
    customer_id = str(input.get("customer_id", "42"))
    message = str(input.get("message", "Hello!"))
    customer = ctx.connectors.call("crm", "get-customer", id=customer_id)
    prompt = ctx.prompts.get("support-system")
    system = ctx.prompts.render("support-system", product="Acme", customer=customer["name"])
    # The opening line is a prompt too: support staff edit it without a deploy.
    greeting = ctx.prompts.render("support-greeting", customer=customer["name"])
    reply = ctx.llm.chat([
        {"role": "system", "content": system},
        {"role": "user", "content": message},
    ])
    ctx.logger.info("answered %s with prompt v%s", customer["name"], prompt.version)
    return {
        "message": f"{greeting.strip()} {reply.text}",
        "customer": customer["name"],
        "crm": customer["source"],
        "prompt_version": prompt.version,
        "env": ctx.env,
    }
