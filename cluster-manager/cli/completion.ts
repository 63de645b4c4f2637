import type { Command } from 'commander';

/** Words that may follow a command (its actions), where the command takes them as its first argument. */
const ACTIONS: Record<string, string[]> = {
  node: ['cordon', 'uncordon', 'drain', 'label', 'remove'],
  token: ['create', 'list', 'revoke'],
  config: ['set-context', 'use-context', 'get-contexts', 'current-context', 'delete-context'],
};

/**
 * A bash completion script for edgectl (`source <(edgectl completion bash)`): its commands, each command's
 * flags and actions, and the global flags, all read from the program itself so that it never falls behind.
 */
export function bashCompletion(program: Command): string {
  const longFlags = (command: Command) =>
    command.options.flatMap((option) => (option.long ? [option.long] : [])).join(' ');
  const commands = program.commands.map((command) => command.name());
  // Global flags that take a value: the word after them is that value, not the command.
  const withValue = program.options.flatMap((option) =>
    option.long && option.required ? [option.long] : [],
  );
  const cases = program.commands
    .map((command) => {
      const words = [...(ACTIONS[command.name()] ?? []), longFlags(command)].join(' ').trim();
      return `    ${command.name()}) words="${words}" ;;`;
    })
    .join('\n');
  return `# edgectl completion for bash: source <(edgectl completion bash)
_edgectl() {
  local current="\${COMP_WORDS[COMP_CWORD]}" command="" word words value=""
  for word in "\${COMP_WORDS[@]:1:COMP_CWORD-1}"; do
    if [ -n "$value" ]; then value=""; continue; fi
    case "$word" in
      ${withValue.join('|')}) value=1 ;;
      -*) ;;
      *) command="$word"; break ;;
    esac
  done
  case "$command" in
    "") words="${commands.join(' ')} ${longFlags(program)}" ;;
${cases}
  esac
  COMPREPLY=($(compgen -W "$words" -- "$current"))
}
complete -o default -F _edgectl edgectl
`;
}
