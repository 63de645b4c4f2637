import type { Request, Response } from 'express';
import { z } from 'zod';
import type { FieldProblem } from '../../shared/index.js';
import { invalid } from '../errors.js';

/** The largest page a list route hands out; without `limit` a list route answers everything, as it always did. */
export const MAX_PAGE_LIMIT = 1000;
/** A cursor is a sort key, a few hundred bytes at most; anything much longer is not one of ours. */
const MAX_CURSOR_LENGTH = 2048;

/**
 * How a list is ordered: the sort key of an item, how two keys compare, and what a decoded cursor must be.
 * A cursor holds the key of the last item of a page, so the next page starts after it whatever was added or
 * removed in between (keyset pagination: no offsets that shift).
 */
export interface SortOrder<T, K> {
  keyOf(item: T): K;
  compare(a: K, b: K): number;
  cursor: z.ZodType<K>;
}

/**
 * Reads a filter from every value given for its query parameter: the filter, or what is wrong with it. `doc`
 * says what the parameter takes, for /api/openapi.json.
 */
export type FilterParser<T> = ((values: string[]) => { value: T } | { problem: string }) & {
  readonly doc: QueryParameterDoc;
};

/** A query parameter as /api/openapi.json describes it: the schema of one value; `repeatable`: given again. */
export interface QueryParameterDoc {
  schema: z.ZodType;
  description: string;
  repeatable?: boolean;
}

/** `limit` and `cursor` of every list, as /api/openapi.json describes them. */
export const PAGE_PARAMETERS: Record<'limit' | 'cursor', QueryParameterDoc> = {
  limit: {
    schema: z.int().min(1).max(MAX_PAGE_LIMIT),
    description: `at most this many items (without it: all of them)`,
  },
  cursor: {
    schema: z.string().max(MAX_CURSOR_LENGTH),
    description: 'the page after this one: X-Next-Cursor (or the Link header) of the previous page',
  },
};

export interface ListQuery<K, F> {
  limit?: number;
  /** The sort key of the last item of the previous page. */
  after?: K;
  filters: F;
  /** The filter parameters as given, carried into the next page's link. */
  filterParams: [string, string][];
}

export interface Page<T> {
  items: T[];
  /** Present when more items follow this page. */
  nextCursor?: string;
}

/** A filter given at most once, one of `values`. */
export function oneOf<const T extends readonly [string, ...string[]]>(
  values: T,
  description: string,
): FilterParser<T[number] | undefined> {
  const parse = (given: string[]) => {
    if (given.length > 1) return { problem: 'given more than once' };
    const [value] = given;
    if (value === undefined) return { value: undefined };
    return (values as readonly string[]).includes(value)
      ? { value: value as T[number] }
      : { problem: `must be one of ${values.join(', ')}` };
  };
  return Object.assign(parse, { doc: { schema: z.enum(values), description } });
}

/** A filter given at most once, any text that is not empty (an id or a name). */
export function someText(description: string): FilterParser<string | undefined> {
  const parse = (given: string[]) => {
    if (given.length > 1) return { problem: 'given more than once' };
    const [value] = given;
    return value === '' ? { problem: 'must not be empty' } : { value };
  };
  return Object.assign(parse, { doc: { schema: z.string().min(1), description } });
}

/** A filter given any number of times as `key=value` (the first `=` splits); an item must match all of them. */
export function keyValuePairs(description: string): FilterParser<[string, string][]> {
  const parse = (given: string[]) => {
    const pairs: [string, string][] = [];
    for (const text of given) {
      const split = text.indexOf('=');
      if (split < 1) return { problem: `"${text}" is not key=value` };
      pairs.push([text.slice(0, split), text.slice(split + 1)]);
    }
    return { value: pairs };
  };
  return Object.assign(parse, {
    doc: { schema: z.string().regex(/^[^=]+=/), description, repeatable: true },
  });
}

type Filters<P> = { [N in keyof P]: P[N] extends FilterParser<infer T> ? T : never };

/**
 * Reads `limit`, `cursor` and the route's filters from the query string (repeated parameters stay repeated,
 * whatever Express's query parser makes of them). Every bad parameter is named in one 400; parameters the
 * route does not know are ignored, as they always were.
 */
export function parseListQuery<K, P extends Record<string, FilterParser<unknown>>>(
  req: Request,
  order: { cursor: z.ZodType<K> },
  parsers: P,
): ListQuery<K, Filters<P>> {
  const params = new URL(req.originalUrl, 'http://localhost').searchParams;
  const problems: FieldProblem[] = [];
  const filters: Record<string, unknown> = {};
  const filterParams: [string, string][] = [];
  for (const [name, parse] of Object.entries(parsers)) {
    const given = params.getAll(name);
    const result = parse(given);
    if ('problem' in result) problems.push({ path: name, message: result.problem });
    else {
      filters[name] = result.value;
      for (const value of given) filterParams.push([name, value]);
    }
  }
  const limit = parseLimit(params.getAll('limit'));
  if (typeof limit === 'string') problems.push({ path: 'limit', message: limit });
  const after = parseCursor(params.getAll('cursor'), order.cursor);
  if (after && 'problem' in after) problems.push({ path: 'cursor', message: after.problem });
  if (problems.length > 0) {
    throw invalid(`invalid query: ${problems.map((problem) => problem.path).join(', ')}`, problems);
  }
  return {
    ...(typeof limit === 'number' ? { limit } : {}),
    ...(after && 'key' in after ? { after: after.key } : {}),
    filters: filters as Filters<P>,
    filterParams,
  };
}

/** The number, nothing when absent, or what is wrong with it. */
function parseLimit(given: string[]): number | string | undefined {
  if (given.length > 1) return 'given more than once';
  const [text] = given;
  if (text === undefined) return undefined;
  const limit = /^\d{1,7}$/.test(text) ? Number(text) : Number.NaN;
  return limit >= 1 && limit <= MAX_PAGE_LIMIT ? limit : `must be a whole number from 1 to ${MAX_PAGE_LIMIT}`;
}

function parseCursor<K>(given: string[], schema: z.ZodType<K>): { key: K } | { problem: string } | undefined {
  if (given.length > 1) return { problem: 'given more than once' };
  const [text] = given;
  if (text === undefined) return undefined;
  const problem = { problem: 'not a cursor from a previous page of this list' };
  if (text.length > MAX_CURSOR_LENGTH || !/^[A-Za-z0-9_-]+$/.test(text)) return problem;
  let decoded: unknown;
  try {
    decoded = JSON.parse(Buffer.from(text, 'base64url').toString('utf8'));
  } catch {
    return problem;
  }
  const key = schema.safeParse(decoded);
  return key.success ? { key: key.data } : problem;
}

function encodeCursor(key: unknown): string {
  return Buffer.from(JSON.stringify(key), 'utf8').toString('base64url');
}

/**
 * The page of `items` (already filtered, in any order) that follows the query's cursor: sorted, at most
 * `limit` long, with the cursor of the next page when more follow.
 */
export function paginate<T, K>(
  items: readonly T[],
  order: SortOrder<T, K>,
  query: ListQuery<K, unknown>,
): Page<T> {
  const { after, limit } = query;
  const rest = items
    .map((item) => ({ item, key: order.keyOf(item) }))
    .filter(({ key }) => after === undefined || order.compare(key, after) > 0)
    .sort((a, b) => order.compare(a.key, b.key));
  const page = limit === undefined ? rest : rest.slice(0, limit);
  const last = page.at(-1);
  return {
    items: page.map(({ item }) => item),
    ...(last && page.length < rest.length ? { nextCursor: encodeCursor(last.key) } : {}),
  };
}

/**
 * Answers with the page as a plain array (what clients read since before there were pages); when more follow,
 * `Link: <same list, same filters, next cursor>; rel="next"` and `X-Next-Cursor` say where.
 */
export function sendPage(
  req: Request,
  res: Response,
  query: ListQuery<unknown, unknown>,
  nextCursor: string | undefined,
  views: unknown[],
): void {
  if (nextCursor !== undefined) {
    const next = new URLSearchParams([
      ['limit', String(query.limit)],
      ['cursor', nextCursor],
      ...query.filterParams,
    ]);
    res.setHeader('Link', `<${req.baseUrl}?${next}>; rel="next"`);
    res.setHeader('X-Next-Cursor', nextCursor);
  }
  res.json(views);
}

/** Strings in code-unit order, as `<` compares them (and as SQLite's BINARY collation does for ASCII). */
export function compareText(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0;
}
