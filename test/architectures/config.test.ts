/**
 * config.json → routing, checked against what transformers' own classes make of the same config
 * (test/fixtures/configs/cases.json, written by scripts/fixtures/make_config_cases.py with transformers 5.18):
 * every spelling of the expert count that transformers honours, its defaults for missing routing keys, and the
 * routing configs on which its router fails or mixes tokens, which moe-quant must reject when parsing config.json.
 */
import fs from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { specFromConfig } from '../../src/architectures/registry.js';
import { moeLayers, type RoutingSpec } from '../../src/architectures/types.js';
import { catchMoe } from '../checkpoint/helpers.js';

type Config = Record<string, unknown>;

interface Router {
  experts: number | null;
  top_k: number | null;
  n_group?: number | null;
  topk_group?: number | null;
  routed_scaling_factor?: number;
  norm_topk_prob?: boolean;
  topk_method?: string;
}

interface Case {
  name: string;
  kind: 'spelling' | 'defaults' | 'weights' | 'routing';
  config: Config;
  router: Router;
  honoured?: boolean;
  saved?: Config | null;
  weight_over_score?: number | null;
  error?: string | null;
  first_token_choice_depends_on_other_tokens?: boolean;
  max_groups_in_selection?: number;
}

const FILE = path.resolve(__dirname, '../fixtures/configs/cases.json');
const CASES = (JSON.parse(fs.readFileSync(FILE, 'utf8')) as { cases: Case[] }).cases;
const of = (kind: Case['kind']) => CASES.filter((c) => c.kind === kind);

/** The expert-count key moe-quant reads for each family (what "is required" names when no spelling is given). */
const EXPERTS_KEY: Record<string, string> = {
  mixtral: 'num_local_experts',
  qwen2_moe: 'num_experts',
  qwen3_moe: 'num_experts',
  olmoe: 'num_experts',
  deepseek: 'n_routed_experts',
  deepseek_v2: 'n_routed_experts',
  deepseek_v3: 'n_routed_experts',
};

function routingOf(config: Config): RoutingSpec {
  const layers = moeLayers(specFromConfig(config));
  expect(layers.length).toBeGreaterThan(0);
  return layers[0]!.ffn.routing;
}

/** The routing moe-quant derives agrees with what transformers' router was built with. */
function expectSameRouting(r: RoutingSpec, router: Router): void {
  expect(r.numExperts).toBe(router.experts);
  expect(r.numExpertsUsed).toBe(router.top_k);
  const grouped = router.n_group != null && router.topk_method !== 'greedy';
  if (grouped) expect(r.groups).toMatchObject({ numGroups: router.n_group, numGroupsUsed: router.topk_group });
  else if (router.n_group !== undefined) expect(r.groups === null || r.groups.numGroups === 1).toBe(true);
}

describe('every spelling of the expert count that transformers honours', () => {
  it('covers the attribute_map aliases of every family', () => {
    expect(of('spelling').map((c) => c.name)).toEqual(
      expect.arrayContaining(['mixtral: num_experts', 'qwen3_moe: num_local_experts', 'olmoe: num_local_experts', 'deepseek_v2: num_experts', 'deepseek_v3: num_local_experts']),
    );
  });

  for (const c of of('spelling')) {
    const family = c.config['model_type'] as string;
    if (c.honoured) {
      it(`${c.name}: accepted, ${c.router.experts} experts as transformers`, () => {
        expectSameRouting(routingOf(c.config), c.router);
        if (c.saved) expectSameRouting(routingOf(c.saved), c.router);
      });
    } else {
      it(`${c.name}: transformers ignores this spelling (falls back to ${c.router.experts ?? 'no MoE'}); moe-quant asks for ${EXPERTS_KEY[family]}`, () => {
        const err = catchMoe(() => specFromConfig(c.config), 'BAD_CONFIG');
        expect(err.message).toBe(`config.json: "${EXPERTS_KEY[family]}" is required (got undefined)`);
        // the file transformers saves from it carries its fallback under the key moe-quant reads
        if (c.saved) expectSameRouting(routingOf(c.saved), c.router);
      });
    }
  }
});

describe('two spellings of one key', () => {
  const aliased = of('spelling').filter((c) => c.honoured && c.name !== `${c.config['model_type']}: ${EXPERTS_KEY[c.config['model_type'] as string]}` && !c.name.includes('both'));
  it('one alias case per family that has an alias', () => {
    expect(aliased.map((c) => c.config['model_type']).sort()).toEqual(['deepseek_v2', 'deepseek_v3', 'mixtral', 'olmoe', 'qwen3_moe']);
  });
  for (const c of aliased) {
    const family = c.config['model_type'] as string;
    const alias = c.name.split(': ')[1]!;
    const key = EXPERTS_KEY[family]!;
    it(`${family}: "${alias}" and "${key}" with different values is an error naming both`, () => {
      const n = c.config[alias] as number;
      const err = catchMoe(() => specFromConfig({ ...c.config, [key]: n + 2 }), 'BAD_CONFIG');
      expect(err.message).toBe(`config.json: "${key}" (${n + 2}) and "${alias}" (${n}) are two spellings of one setting and disagree`);
    });
    it(`${family}: "${alias}" and "${key}" with the same value are accepted`, () => {
      expect(routingOf({ ...c.config, [key]: c.config[alias] }).numExperts).toBe(c.config[alias]);
    });
    it(`${family}: a bad value under "${alias}" is reported under that name`, () => {
      const err = catchMoe(() => specFromConfig({ ...c.config, [alias]: '6' }), 'BAD_CONFIG');
      expect(err.message).toBe(`config.json: "${alias}" must be an integer ≥ 1 (got "6")`);
    });
  }
});

describe('transformers 5 checkpoint with the Qwen3-MoE num_local_experts spelling', () => {
  const dir = path.resolve(__dirname, '../fixtures/generated/qwen3-moe');
  it('config.json is the one save_pretrained wrote: num_local_experts, no num_experts; moe-quant reads it', () => {
    const config = JSON.parse(fs.readFileSync(path.join(dir, 'config.json'), 'utf8')) as Config;
    expect(config['transformers_version']).toMatch(/^5\./);
    expect(config['num_local_experts']).toBe(8);
    expect(config['num_experts']).toBeUndefined();
    const spec = specFromConfig(config);
    expect(moeLayers(spec).map((l) => l.index)).toEqual([0, 1]); // layer 2 in mlp_only_layers
    expect(moeLayers(spec)[0]!.ffn.routing).toMatchObject({ numExperts: 8, numExpertsUsed: 2, normalize: true });
  });
});

describe('defaults of missing routing keys are transformers\'', () => {
  for (const c of of('defaults')) {
    it(c.name, () => {
      const r = routingOf(c.config);
      expectSameRouting(r, c.router);
      expect(r.scale).toBe(c.router.routed_scaling_factor);
      expect(r.normalize).toBe(c.router.norm_topk_prob);
      if (c.saved) {
        const s = routingOf(c.saved);
        expect([s.groups?.numGroups, s.groups?.numGroupsUsed, s.scale, s.normalize]).toEqual([r.groups?.numGroups, r.groups?.numGroupsUsed, r.scale, r.normalize]);
      }
    });
  }
});

describe('top-1 with norm_topk_prob: weights as the reference computes them', () => {
  for (const c of of('weights')) {
    it(`${c.name}: weight = score × ${c.weight_over_score}`, () => {
      // a constant weight/score ratio means the reference does not renormalise, only scales
      expect(c.weight_over_score).not.toBeNull();
      const r = routingOf(c.config);
      expect(r.normalize).toBe(false);
      expect(r.scale).toBe(c.weight_over_score);
    });
  }
});

/** moe-quant's error for each routing config that transformers cannot route (after "config.json: "). */
const REJECTED: Record<string, string> = {
  'mixtral: top-k > experts': '"num_experts_per_tok" must be ≤ "num_local_experts" = 4: top-k picks distinct experts (got 5)',
  'qwen2_moe: top-k > experts': '"num_experts_per_tok" must be ≤ "num_experts" = 4: top-k picks distinct experts (got 5)',
  'qwen3_moe: top-k > experts': '"num_experts_per_tok" must be ≤ "num_experts" = 4: top-k picks distinct experts (got 5)',
  'olmoe: top-k > experts': '"num_experts_per_tok" must be ≤ "num_experts" = 4: top-k picks distinct experts (got 5)',
  'deepseek: top-k > experts': '"num_experts_per_tok" must be ≤ "n_routed_experts" = 4: top-k picks distinct experts (got 5)',
  'deepseek_v2 greedy: top-k > experts': '"num_experts_per_tok" must be ≤ "n_routed_experts" = 4: top-k picks distinct experts (got 5)',
  'deepseek_v2 group: n_group does not divide the experts': '"n_group" must divide "n_routed_experts" = 6 into equal groups (got 4)',
  'deepseek_v2 group: topk_group > n_group': '"topk_group" must be ≤ "n_group" = 2 (got 3)',
  'deepseek_v2 group: top-k > experts in the kept groups':
    '"num_experts_per_tok" must be ≤ "topk_group" × experts per group = 1 × 2 = 2: only the kept groups\' experts can be selected (got 3)',
  'deepseek_v3: top-k > experts': '"num_experts_per_tok" must be ≤ "n_routed_experts" = 8: top-k picks distinct experts (got 9)',
  'deepseek_v3: n_group does not divide the experts': '"n_group" must divide "n_routed_experts" = 8 into equal groups (got 3)',
  'deepseek_v3: topk_group > n_group': '"topk_group" must be ≤ "n_group" = 2 (got 3)',
  'deepseek_v3: one expert per group':
    '"n_group" must leave at least 2 experts per group ("n_routed_experts" = 4): the group score sums each group\'s best two (got 4)',
  'deepseek_v3: top-k > experts in the kept groups':
    '"num_experts_per_tok" must be ≤ "topk_group" × experts per group = 1 × 2 = 2: only the kept groups\' experts can be selected (got 3)',
};

/** transformers routes the case: no error, each token's choice its own, top-k inside the kept groups. */
function routable(c: Case): boolean {
  return (
    c.error === null &&
    c.first_token_choice_depends_on_other_tokens === false &&
    (c.max_groups_in_selection === undefined || c.max_groups_in_selection <= (c.router.topk_group ?? Infinity))
  );
}

describe('routing configs: rejected when config.json is parsed exactly where transformers cannot route', () => {
  it('the expected errors are for the cases transformers cannot route, and cover them all', () => {
    const bad = of('routing').filter((c) => !routable(c)).map((c) => c.name);
    expect(bad.sort()).toEqual(Object.keys(REJECTED).sort());
  });
  for (const c of of('routing')) {
    const expected = REJECTED[c.name];
    if (expected === undefined) {
      it(`${c.name}: accepted, routes as transformers`, () => expectSameRouting(routingOf(c.config), c.router));
    } else {
      it(`${c.name} (transformers: ${c.error ?? 'no error but undefined routing'})`, () => {
        const err = catchMoe(() => specFromConfig(c.config), 'BAD_CONFIG');
        expect(err.message).toBe(`config.json: ${expected}`);
      });
    }
  }
});
